"""Graph rollout without an RPC per process: folder polling, and SIGHUP through the supervisor."""

from __future__ import annotations

import shutil
import signal
import socket
import time
from pathlib import Path

import numpy as np
import tritonclient.grpc as triton

from tests.integration.test_lifecycle import SERVING, EngineProcess
from tests.server_thread import ServerThread


def _quickstart(root: Path, example_graphs: Path) -> Path:
    shutil.copytree(example_graphs / "quickstart", root / "quickstart")
    return root / "quickstart" / "graph.yaml"


def _bump(graph_yaml: Path, version: int) -> None:
    text = graph_yaml.read_text()
    lines = [line for line in text.splitlines() if not line.startswith("version:")]
    graph_yaml.write_text("\n".join([f"version: {version}", *lines]) + "\n")


def _served_version(url: str) -> str:
    client = triton.InferenceServerClient(url)
    try:
        tensor = triton.InferInput("x", [1, 4], "FP32")
        tensor.set_data_from_numpy(np.zeros((1, 4), np.float32))
        return client.infer("quickstart", [tensor]).get_response().model_version
    finally:
        client.close()


def _eventually(predicate, timeout: float = 20.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def test_a_polling_server_picks_up_an_edited_graph(tmp_path: Path, example_graphs: Path) -> None:
    graph_yaml = _quickstart(tmp_path, example_graphs)
    with ServerThread(tmp_path, reload_interval_s=0.2) as server:
        assert _served_version(server.url) == "1"
        _bump(graph_yaml, 2)
        assert _eventually(lambda: _served_version(server.url) == "2")
        graph_yaml.write_text(graph_yaml.read_text().replace("classify.prob", "classify.nope"))
        time.sleep(1.0)  # several polls: the broken edit is rejected every time
        assert _served_version(server.url) == "2"
        assert "nope" in server.server.repository.entry("quickstart").last_error


def test_sighup_to_the_supervisor_reloads_every_worker(tmp_path: Path, example_graphs: Path) -> None:
    graph_yaml = _quickstart(tmp_path, example_graphs)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    engine = EngineProcess(str(tmp_path), "--port", str(port), "--workers", "2")
    url = f"127.0.0.1:{port}"
    try:
        engine.wait_for(SERVING, count=2)
        _bump(graph_yaml, 5)
        engine.proc.send_signal(signal.SIGHUP)
        # Fresh connections land on either worker: all of them must serve the new version.
        assert _eventually(lambda: all(_served_version(url) == "5" for _ in range(12)))
    finally:
        engine.proc.send_signal(signal.SIGTERM)
        assert engine.proc.wait(30) == 0
        engine.stop()
