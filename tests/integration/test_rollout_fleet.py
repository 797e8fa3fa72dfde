"""``engine serve --workers 2``: one rollout for the whole server.

Both workers route by the same step, one driver judges the numbers of both, and a promotion or
a roll-back reaches both: afterwards every fresh connection (SO_REUSEPORT spreads them over the
workers) is answered by the same version."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import tritonclient.grpc as triton
import yaml
from tritonclient.utils import InferenceServerException

from engine.protocol.client import EngineClient
from engine.protocol.generated.engine.v1 import engine_pb2 as epb
from tests.integration.test_lifecycle import SERVING, EngineProcess
from tests.integration.test_rollouts import GOOD_PLAN, MAX_REQUESTS, _repository, _x
from tests.integration.test_shadows import _broken, _row_sum

CLIENTS = 6
"""Connections kept open while driving: enough that both workers take requests."""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _status(url: str) -> dict:  # type: ignore[type-arg]
    engine = EngineClient(url)
    try:
        response = engine.admin("Rollout", epb.RolloutRequest(graph="g"), epb.RolloutResponse)
    finally:
        engine.close()
    return json.loads(response.json)  # type: ignore[no-any-return]


def _call(client: triton.InferenceServerClient, i: int) -> str:
    x = _x(i)
    tensor = triton.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    return str(client.infer("g", [tensor], request_id=f"req-{i}").get_response().model_version)


def _fleet_rollout(tmp_path: Path, candidate, plan: str) -> tuple[dict, int, list[str]]:  # type: ignore[no-untyped-def,type-arg]
    graphs = _repository(tmp_path, candidate, plan)
    config = tmp_path / "engine.yaml"
    config.write_text(yaml.safe_dump({"rollout_state_dir": str(tmp_path / "state"), "log_level": "INFO"}))
    port = _free_port()
    url = f"127.0.0.1:{port}"
    engine = EngineProcess(str(graphs), "--port", str(port), "--workers", "2", "--config", str(config))
    try:
        engine.wait_for(SERVING, count=2)
        clients = [triton.InferenceServerClient(url) for _ in range(CLIENTS)]
        errors, i = 0, 0
        status = _status(url)
        while status["status"] not in ("promoted", "rolled_back") and i < MAX_REQUESTS:
            try:
                _call(clients[i % CLIENTS], i)
            except InferenceServerException:
                errors += 1
            i += 1
            if i % 10 == 0:
                status = _status(url)
        for client in clients:
            client.close()
        after = []
        for j in range(20):  # fresh connections: whichever worker each lands on
            client = triton.InferenceServerClient(url)
            after.append(_call(client, 4 * j + 1))  # never a row the broken candidate fails on
            client.close()
        return _status(url), errors, after
    finally:
        engine.stop()


def test_a_good_candidate_is_promoted_on_every_worker(tmp_path: Path) -> None:
    status, errors, after = _fleet_rollout(tmp_path, _row_sum, GOOD_PLAN)
    assert (status["status"], errors) == ("promoted", 0), status
    assert [e["event"] for e in status["events"]] == ["started", "advanced", "advanced", "promoted"]
    assert after == ["2"] * 20


def test_an_erroring_candidate_is_rolled_back_on_every_worker(tmp_path: Path) -> None:
    plan = """\
rollout:
  steps:
    - canary: {weight: 0.5, requests: 400}
    - promote
  gates: {max_error_rate_increase: 0.01, min_requests: 10}
"""
    status, _, after = _fleet_rollout(tmp_path, _broken, plan)
    assert (status["status"], status["gate"]["gate"]) == ("rolled_back", "max_error_rate_increase"), status
    assert after == ["1"] * 20
    assert np.isclose(
        status["numbers"]["candidate"]["error_rate"],
        status["numbers"]["candidate"]["errors"] / status["numbers"]["candidate"]["requests"],
        atol=1e-6,
    )
