"""Progressive rollouts on a real server: version 2 of graph 'g' carries a ``rollout:`` plan.

tritonclient traffic with no version asked; the server's own driver judges the gates; the
outcome is read with ``engine rollout status`` (the Rollout RPC), as an operator would."""

from __future__ import annotations

import json
import shutil
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

from engine import cli
from engine.protocol.client import EngineClient
from engine.protocol.generated.engine.v1 import engine_pb2 as epb
from tests.integration.test_shadows import WIDTH, _broken, _row_sum, _slow
from tests.server_thread import ServerThread

GRAPH = """\
graph: g
version: {version}
inputs:
  x: {{datatype: FP32, shape: [-1, 4]}}
nodes:
  m: {{model: m.onnx, inputs: {{x: inputs.x}}}}
outputs:
  y: m.y
"""

GOOD_PLAN = """\
rollout:
  steps:
    - shadow: {requests: 30}
    - canary: {weight: 0.05, requests: 200}
    - canary: {weight: 0.5, requests: 60}
    - promote
  gates:
    max_error_rate_increase: 0.01
    max_p99_ratio: 20.0
    min_agreement: {y: 0.95}
    min_requests: 3
  compare: {y: {abs_tol: 0.001}}
"""

MAX_REQUESTS = 8000
"""A rollout that has not settled after this many requests failed the test."""


def _repository(root: Path, candidate: Callable[[Path], None], plan: str) -> Path:
    """graphs/g/1 serves y = row sum; graphs/g/2 is ``candidate`` under ``plan``."""
    graphs = root / "graphs"
    one, two = graphs / "g" / "1", graphs / "g" / "2"
    one.mkdir(parents=True)
    two.mkdir(parents=True)
    _row_sum(one / "m.onnx")
    (one / "graph.yaml").write_text(GRAPH.format(version=1))
    candidate(two / "m.onnx")
    (two / "graph.yaml").write_text(GRAPH.format(version=2) + plan)
    return graphs


def _x(i: int) -> np.ndarray:
    rng = np.random.default_rng(i)
    x = rng.uniform(0, 3, size=(1 + i % 3, WIDTH)).astype(np.float32)
    if i % 4 == 0:
        x[0, 0] = 50.0  # the 'broken' candidate fails on this request
    return x


def _infer(client: triton.InferenceServerClient, i: int, *, check: bool = True) -> str:
    """One request with no version asked; the version that answered it (``check``: a row sum)."""
    x = _x(i)
    tensor = triton.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    result = client.infer("g", [tensor], request_id=f"req-{i}")
    if check:
        np.testing.assert_allclose(result.as_numpy("y"), x.sum(axis=1, keepdims=True), rtol=1e-5)
    return str(result.get_response().model_version)


def _status(server: ServerThread, action: str = "status") -> dict:  # type: ignore[type-arg]
    engine = EngineClient(server.url)
    try:
        response = engine.admin("Rollout", epb.RolloutRequest(graph="g", action=action), epb.RolloutResponse)
    finally:
        engine.close()
    return json.loads(response.json)  # type: ignore[no-any-return]


def _drive(  # type: ignore[type-arg]
    server: ServerThread, until: tuple[str, ...], start: int = 0, *, check: bool = True
) -> tuple[dict, list[str], int]:
    """Send requests until the rollout's status is one of ``until``; the status, the versions that
    answered and the number of client errors."""
    client = triton.InferenceServerClient(server.url)
    versions: list[str] = []
    errors = 0
    status = _status(server)
    i = start
    while status["status"] not in until and i < start + MAX_REQUESTS:
        try:
            versions.append(_infer(client, i, check=check))
        except InferenceServerException:
            errors += 1
        i += 1
        if i % 10 == 0:
            status = _status(server)
    client.close()
    return _status(server), versions, errors


def _events(status: dict) -> list[tuple[str, int]]:  # type: ignore[type-arg]
    return [(e["event"], e["step"]) for e in status["events"]]


def test_a_good_candidate_walks_every_step_and_is_promoted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    graphs = _repository(tmp_path, _row_sum, GOOD_PLAN)
    with ServerThread(graphs, rollout_state_dir=str(tmp_path / "state")) as server:
        status = _status(server)
        assert (status["serving"], status["candidate"], status["status"], status["step"]) == (
            "1",
            "2",
            "running",
            1,
        )
        status, versions, errors = _drive(server, ("promoted", "rolled_back"))
        assert errors == 0
        assert status["status"] == "promoted", status
        assert _events(status) == [("started", 1), ("advanced", 2), ("advanced", 3), ("promoted", 3)]
        assert "2" in versions and "1" in versions  # the canary steps served both
        client = triton.InferenceServerClient(server.url)
        assert {_infer(client, i) for i in range(20)} == {"2"}  # promoted: the latest version
        client.close()
        assert cli.main(["rollout", "status", "g", "--url", server.url]) == 0
        printed = capsys.readouterr().out
        assert "serving v1, candidate v2: promoted" in printed
    saved = json.loads((tmp_path / "state" / "rollouts.json").read_text())
    assert saved["rollouts"]["g"]["status"] == "promoted" and saved["promoted"] == [["g", "2"]]


def _rolled_back(tmp_path: Path, candidate: Callable[[Path], None], plan: str) -> dict:  # type: ignore[type-arg]
    graphs = _repository(tmp_path, candidate, plan)
    with ServerThread(graphs, rollout_state_dir=str(tmp_path / "state")) as server:
        status, _, _ = _drive(server, ("promoted", "rolled_back"), check=False)
        client = triton.InferenceServerClient(server.url)
        assert {_infer(client, i) for i in range(1, 40, 4)} == {"1"}  # rolled back: v1 serves every request
        client.close()
        assert server.server is not None
        with urllib.request.urlopen(f"http://127.0.0.1:{server.server.metrics_port}/metrics") as reply:
            status["metrics"] = reply.read().decode()
    return status


def test_a_candidate_that_errors_on_some_rows_is_rolled_back_in_its_step(tmp_path: Path) -> None:
    plan = """\
rollout:
  steps:
    - canary: {weight: 0.5, requests: 400}
    - promote
  gates: {max_error_rate_increase: 0.01, min_requests: 10}
"""
    status = _rolled_back(tmp_path, _broken, plan)
    assert status["status"] == "rolled_back"
    assert status["step"] == 1
    assert status["gate"]["gate"] == "max_error_rate_increase"
    assert status["gate"]["candidate"] > 0.01 and status["gate"]["serving"] == 0.0
    assert status["gate"]["limit"] == 0.01
    assert status["reason"].startswith("max_error_rate_increase: candidate error rate")
    assert status["numbers"]["candidate"]["requests"] < 400
    metrics = status["metrics"]
    assert 'engine_rollout_state{candidate="2",graph="g",state="rolled_back"} 1.0' in metrics
    assert 'engine_rollout_step{candidate="2",graph="g"} 1.0' in metrics
    assert 'engine_rollout_weight{candidate="2",graph="g"} 0.0' in metrics
    assert 'engine_rollout_gate_value{candidate="2",gate="error_rate_increase",graph="g"}' in metrics


def test_a_slow_candidate_is_rolled_back_by_the_p99_gate(tmp_path: Path) -> None:
    plan = """\
rollout:
  steps:
    - canary: {weight: 0.5, requests: 400}
    - promote
  gates: {max_p99_ratio: 2.0, min_requests: 10}
"""
    status = _rolled_back(tmp_path, lambda p: _slow(p, depth=300), plan)
    assert (status["status"], status["step"], status["gate"]["gate"]) == ("rolled_back", 1, "max_p99_ratio")
    assert status["gate"]["candidate"] > 2.0 * status["gate"]["serving"]


def test_a_disagreeing_candidate_is_rolled_back_in_the_shadow_step(tmp_path: Path) -> None:
    plan = GOOD_PLAN
    status = _rolled_back(tmp_path, lambda p: _row_sum(p, offset=0.5), plan)
    assert (status["status"], status["step"], status["gate"]["gate"]) == ("rolled_back", 1, "min_agreement.y")
    assert status["gate"]["candidate"] < 0.95 and status["gate"]["limit"] == 0.95
    assert "shadow" in status["numbers"]  # the step's shadow numbers are shown


def test_a_restart_mid_rollout_resumes_at_its_step(tmp_path: Path) -> None:
    graphs = _repository(tmp_path, _row_sum, GOOD_PLAN)
    state = str(tmp_path / "state")
    with ServerThread(graphs, rollout_state_dir=state) as server:
        client = triton.InferenceServerClient(server.url)
        i = 0
        while _status(server)["step"] < 2 and i < MAX_REQUESTS:
            _infer(client, i)
            i += 1
        client.close()
        paused = _status(server, "pause")  # holds it at step 2 across the restart
        assert (paused["status"], paused["step"]) == ("paused", 2)
    with ServerThread(graphs, rollout_state_dir=state) as server:
        status = _status(server)
        assert (status["status"], status["step"]) == ("paused", 2)
        assert _events(status)[-1] == ("resumed", 2)
        assert _status(server, "resume")["status"] == "running"
        status, _, errors = _drive(server, ("promoted", "rolled_back"), start=i)
        assert (status["status"], errors) == ("promoted", 0)
    three = graphs / "g" / "3"  # a later rollout, aborted: v2 stays latest, across a restart too
    shutil.copytree(graphs / "g" / "2", three)
    (three / "graph.yaml").write_text((three / "graph.yaml").read_text().replace("version: 2", "version: 3"))
    for _ in range(2):
        with ServerThread(graphs, rollout_state_dir=state) as server:  # promoted stays promoted
            client = triton.InferenceServerClient(server.url)
            assert _infer(client, 1) == "2"
            client.close()
            status = _status(server)
            assert (status["serving"], status["candidate"]) == ("2", "3")
            if status["status"] == "running":
                assert _status(server, "abort")["status"] == "rolled_back"
            else:
                assert status["status"] == "rolled_back"


def test_operator_actions_and_their_preconditions(tmp_path: Path) -> None:
    graphs = _repository(tmp_path, _row_sum, GOOD_PLAN)
    with ServerThread(graphs, rollout_state_dir=str(tmp_path / "state")) as server:
        assert cli.main(["rollout", "resume", "g", "--url", server.url]) == 1  # running: nothing to resume
        aborted = _status(server, "abort")
        assert (aborted["status"], aborted["reason"]) == ("rolled_back", "abort by an operator")
        assert (
            cli.main(["rollout", "resume", "g", "--url", server.url]) == 1
        )  # rolled back: nothing to resume
        client = triton.InferenceServerClient(server.url)
        assert _infer(client, 3) == "1"
        assert _infer_version(client, 3, "2") == "2"  # an explicit version still reaches the candidate
        client.close()


def _infer_version(client: triton.InferenceServerClient, i: int, version: str) -> str:
    x = _x(i)
    tensor = triton.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    return str(client.infer("g", [tensor], model_version=version).get_response().model_version)


def test_a_graph_without_rollout_has_none(tmp_path: Path) -> None:
    graphs = tmp_path / "graphs"
    (graphs / "g").mkdir(parents=True)
    _row_sum(graphs / "g" / "m.onnx")
    (graphs / "g" / "graph.yaml").write_text(GRAPH.format(version=1))
    with ServerThread(graphs, rollout_state_dir=str(tmp_path / "state")) as server:
        assert cli.main(["rollout", "status", "g", "--url", server.url]) == 1  # FAILED_PRECONDITION
        client = triton.InferenceServerClient(server.url)
        assert _infer(client, 1) == "1"
        client.close()


def test_a_candidate_that_errors_in_the_shadow_step_is_rolled_back_before_serving_anyone(
    tmp_path: Path,
) -> None:
    plan = """\
rollout:
  steps:
    - shadow: {requests: 200}
    - canary: {weight: 0.5, requests: 100}
    - promote
  gates: {max_error_rate_increase: 0.01, min_requests: 10}
"""
    graphs = _repository(tmp_path, _broken, plan)
    with ServerThread(graphs, rollout_state_dir=str(tmp_path / "state")) as server:
        status, versions, errors = _drive(server, ("promoted", "rolled_back"))
    assert (status["status"], status["step"], status["gate"]["gate"]) == (
        "rolled_back",
        1,
        "max_error_rate_increase",
    )
    assert errors == 0 and set(versions) == {"1"}  # mirrored only: no client saw the candidate
    assert status["numbers"]["shadow"]["errors"] > 0


def test_a_sticky_rollout_keeps_one_key_on_one_arm(tmp_path: Path) -> None:
    plan = """\
rollout:
  steps:
    - canary: {weight: 0.5, requests: 100000}
    - promote
  sticky: inputs.x
"""
    graphs = _repository(tmp_path, _row_sum, plan)
    with ServerThread(graphs, rollout_state_dir=str(tmp_path / "state")) as server:
        client = triton.InferenceServerClient(server.url)
        by_key: dict[float, set[str]] = {}
        for i in range(120):
            x = _x(i % 12)  # 12 keys (x[0, 0]), each sent 10 times under 10 request ids
            tensor = triton.InferInput("x", list(x.shape), "FP32")
            tensor.set_data_from_numpy(x)
            version = client.infer("g", [tensor], request_id=f"r{i}").get_response().model_version
            by_key.setdefault(float(x[0, 0]), set()).add(str(version))
        client.close()
    assert all(len(arms) == 1 for arms in by_key.values()), by_key  # one key, one arm
    assert {arm for arms in by_key.values() for arm in arms} == {"1", "2"}  # both arms took keys


def test_each_transition_is_an_event_in_the_request_log(tmp_path: Path) -> None:
    from engine.observability.log_reader import ReadStats, read_records

    graphs = _repository(tmp_path, _row_sum, GOOD_PLAN)
    logs = tmp_path / "logs"
    request_log = {"sink": "jsonl", "directory": str(logs)}
    with ServerThread(graphs, rollout_state_dir=str(tmp_path / "state"), request_log=request_log) as server:
        client = triton.InferenceServerClient(server.url)
        _infer(client, 1)
        client.close()
        assert _status(server, "abort")["status"] == "rolled_back"
    lines = [json.loads(line) for f in sorted(logs.glob("*.jsonl")) for line in f.read_text().splitlines()]
    events = [
        (r["event"], r["graph"], r["candidate"], r["status"])
        for r in lines
        if r["schema"] == "engine.event/1"
    ]
    assert events == [
        ("rollout.started", "g", "2", "running"),
        ("rollout.rolled_back", "g", "2", "rolled_back"),
    ]
    stats = ReadStats()
    assert all(
        r["schema"] == "engine.request/1" for r in read_records(logs, stats)
    )  # readers pass events over
    assert stats.events == 2
