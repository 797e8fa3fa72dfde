"""``engine serve --workers 2`` is one server: every state change and report holds for both workers.

Each check opens fresh connections (one per call): SO_REUSEPORT spreads them over the workers,
so a worker that missed a change would answer some of them wrongly. The merged ``/metrics``
(one ``worker`` label per process) shows that both workers did take calls.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
import yaml
from tritonclient.utils import InferenceServerException

from tests.integration.test_lifecycle import SERVING, EngineProcess

CALLS = 20
METRICS = re.compile(r"metrics of all workers on http://([\d.]+):(\d+)/metrics")
HTTP = re.compile(r"HTTP/REST on http://([\d.]+):(\d+)/v2")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _bump(graph_yaml: Path, version: int) -> None:
    lines = [line for line in graph_yaml.read_text().splitlines() if not line.startswith("version:")]
    graph_yaml.write_text("\n".join([f"version: {version}", *lines]) + "\n")


class Fleet:
    def __init__(self, engine: EngineProcess, url: str, metrics_url: str, graph_yaml: Path) -> None:
        self.engine, self.url, self.metrics_url, self.graph_yaml = engine, url, metrics_url, graph_yaml

    def call(self, rows: int = 1, width: int = 4) -> triton.InferResult:
        """One inference on a fresh connection."""
        client = triton.InferenceServerClient(self.url)
        try:
            tensor = triton.InferInput("x", [rows, width], "FP32")
            tensor.set_data_from_numpy(np.zeros((rows, width), np.float32))
            return client.infer("quickstart", [tensor])
        finally:
            client.close()

    def outcomes(self, calls: int = CALLS, **shape: int) -> list[str]:
        """Per fresh connection: the version that answered, or the status of the refusal."""
        found = []
        for _ in range(calls):
            try:
                found.append(self.call(**shape).get_response().model_version)
            except InferenceServerException as exc:
                found.append(str(exc.status()))
        return found

    def admin(self) -> triton.InferenceServerClient:
        return triton.InferenceServerClient(self.url)

    def metric(self, name: str, **labels: str) -> dict[str, float]:
        """Per worker: the value of ``name`` with these labels in the merged /metrics."""
        with urllib.request.urlopen(self.metrics_url, timeout=10) as reply:
            text = reply.read().decode()
        found: dict[str, float] = {}
        for line in text.splitlines():
            if not line.startswith(name + "{"):
                continue
            label_text, value = line[len(name) + 1 :].rsplit("} ", 1)
            pairs = dict(re.findall(r'(\w+)="([^"]*)"', label_text))
            if all(pairs.get(k) == v for k, v in labels.items()):
                found[pairs["worker"]] = found.get(pairs["worker"], 0.0) + float(value)
        return found


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, example_graphs: Path) -> Iterator[Fleet]:
    root = tmp_path_factory.mktemp("fleet")
    graphs = root / "graphs"
    shutil.copytree(example_graphs / "quickstart", graphs / "quickstart")
    # Settings given only in the file: every worker must run with them, not with the defaults.
    config = root / "settings.yaml"
    config.write_text(yaml.safe_dump({"max_elements": 40, "max_batch_size": 8, "log_level": "INFO"}))
    port = _free_port()
    engine = EngineProcess(str(graphs), "--port", str(port), "--workers", "2", "--config", str(config))
    try:
        engine.wait_for(SERVING, count=2)
        host, metrics_port = engine.wait_for(METRICS)[0].groups()
        yield Fleet(
            engine,
            f"127.0.0.1:{port}",
            f"http://{host}:{metrics_port}/metrics",
            graphs / "quickstart" / "graph.yaml",
        )
    finally:
        engine.stop()


def test_settings_from_the_config_file_reach_every_worker(fleet: Fleet) -> None:
    assert fleet.outcomes(rows=10) == ["1"] * CALLS  # 40 elements: allowed
    assert fleet.outcomes(rows=11) == ["StatusCode.INVALID_ARGUMENT"] * CALLS  # 44: over max_elements
    config = fleet.admin().get_model_config("quickstart", as_json=True)["config"]
    assert int(config["max_batch_size"]) == 8


def test_statistics_count_every_call_whichever_worker_took_it(fleet: Fleet) -> None:
    client = fleet.admin()
    before = client.get_inference_statistics("quickstart", as_json=True)["model_stats"][0]
    assert fleet.outcomes(calls=40) == ["1"] * 40
    after = client.get_inference_statistics("quickstart", as_json=True)["model_stats"][0]
    success = int(after["inference_stats"]["success"]["count"]) - int(
        before["inference_stats"]["success"]["count"]
    )
    assert success == 40
    per_worker = fleet.metric("engine_requests_total", graph="quickstart")
    assert set(per_worker) == {"0", "1"} and all(n > 0 for n in per_worker.values()), per_worker


def test_a_reload_reaches_every_worker(fleet: Fleet) -> None:
    _bump(fleet.graph_yaml, 2)
    fleet.admin().load_model("quickstart")
    assert fleet.outcomes() == ["2"] * CALLS
    index = fleet.admin().get_model_repository_index(as_json=True)["models"]
    assert [(m["name"], m.get("version"), m["state"]) for m in index] == [("quickstart", "2", "READY")]


def test_an_unload_reaches_every_worker_and_a_load_undoes_it(fleet: Fleet) -> None:
    client = fleet.admin()
    client.unload_model("quickstart")
    assert fleet.outcomes() == ["StatusCode.UNAVAILABLE"] * CALLS
    assert not client.is_model_ready("quickstart")
    client.load_model("quickstart")
    assert set(fleet.outcomes()) == {client.get_model_metadata("quickstart").versions[0]}


def test_http_reload_unload_and_statistics_hold_for_every_worker(fleet: Fleet) -> None:
    ports = {m.group(2) for m in fleet.engine.wait_for(HTTP, count=2)}
    assert len(ports) == 1, "both workers share one HTTP port"
    base = f"http://127.0.0.1:{ports.pop()}"
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [0, 0, 0, 0]}]}

    def outcomes() -> list[str]:  # a fresh connection per call: SO_REUSEPORT spreads them
        found = []
        for _ in range(CALLS):
            answer = httpx.post(f"{base}/v2/models/quickstart/infer", json=body, timeout=30)
            found.append(
                answer.json()["model_version"] if answer.status_code == 200 else str(answer.status_code)
            )
        return found

    def successes() -> int:
        stats = httpx.get(f"{base}/v2/models/quickstart/stats", timeout=30).json()["model_stats"][0]
        return int(stats["inference_stats"]["success"]["count"])

    version = httpx.get(f"{base}/v2/models/quickstart", timeout=30).json()["versions"][-1]
    before = successes()
    assert outcomes() == [version] * CALLS
    assert successes() == before + CALLS  # summed over both workers
    per_worker = fleet.metric("engine_protocol_requests_total", protocol="http", code="OK")
    assert set(per_worker) == {"0", "1"} and all(n > 0 for n in per_worker.values()), per_worker

    assert httpx.post(f"{base}/v2/repository/models/quickstart/unload", timeout=60).status_code == 200
    assert outcomes() == ["503"] * CALLS
    _bump(fleet.graph_yaml, int(version) + 1)
    reloaded = httpx.post(f"{base}/v2/engine/reload", json={"names": ["quickstart"]}, timeout=60).json()
    assert reloaded["results"][0]["action"] == "loaded"
    assert outcomes() == [str(int(version) + 1)] * CALLS


def test_a_restarted_worker_serves_what_the_fleet_serves(fleet: Fleet) -> None:
    client = fleet.admin()
    version = client.get_model_metadata("quickstart").versions[0]
    client.unload_model("quickstart")
    pids = fleet.engine.wait_for(re.compile(r"started 2 workers: (\d+) (\d+)"))[0].groups()
    os.kill(int(pids[1]), signal.SIGKILL)
    fleet.engine.wait_for(re.compile(r"worker 1 restarted as pid"))
    fleet.engine.wait_for(re.compile(r"worker 1 serving"), count=2)  # started, then restarted
    fleet.engine.wait_for(SERVING, count=3)
    assert fleet.outcomes() == ["StatusCode.UNAVAILABLE"] * CALLS  # the unload outlived the restart
    client.load_model("quickstart")
    assert fleet.outcomes() == [version] * CALLS
