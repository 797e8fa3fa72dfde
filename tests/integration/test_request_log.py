"""Request logging through a real server: policies from graph.yaml, records on disk, every
record accounted for, redaction and hashing checked in the raw bytes."""

from __future__ import annotations

import hashlib
import hmac
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as triton

from engine.observability.log_reader import read_records
from engine.observability.request_record import canonical_bytes
from tests import fraud_example as fraud
from tests.server_thread import ServerThread

TXN = np.array([[0.9, 1, 31337.0]], np.float32)  # 31337 marks the redacted tensor
SOURCES = fraud.feature_sources()  # the graphs are a copy: the users source comes from graphs/engine.yaml


def _inputs(amount: float, txn: np.ndarray = TXN) -> list[triton.InferInput]:
    out = []
    arrays = (
        ("amount", np.array([[amount]], np.float32)),
        ("user_id", fraud.user_ids("u0108")),
        ("txn", txn),
    )
    for name, array in arrays:
        tensor = triton.InferInput(name, list(array.shape), "BYTES" if name == "user_id" else "FP32")
        tensor.set_data_from_numpy(array)
        out.append(tensor)
    return out


@pytest.fixture
def graphs(tmp_path: Path, example_graphs: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ENGINE_LOG_HASH_KEY", "test-salt")
    root = tmp_path / "graphs"
    shutil.copytree(example_graphs / "fraud", root / "fraud")
    shutil.copytree(example_graphs / "quickstart", root / "quickstart")
    fraud = root / "fraud" / "graph.yaml"
    base = fraud.read_text().split("\nlogging:")[0]  # the example's own policy is replaced
    fraud.write_text(
        base + "\nlogging: {sample: 1.0, nodes: true, redact: [inputs.txn], hash: [inputs.amount]}\n"
    )
    quick = root / "quickstart" / "graph.yaml"
    quick.write_text(quick.read_text() + "logging: {sample: 0.0, always_on: [error]}\n")
    return root


def test_every_request_is_recorded_with_its_fields(graphs: Path, tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    server = ServerThread(
        graphs, request_log={"sink": "jsonl", "directory": str(logs)}, feature_sources=SOURCES
    )
    with server:
        client = triton.InferenceServerClient(server.url)
        for i, amount in enumerate([50.0, 2500.0, 700.0]):
            client.infer("fraud", _inputs(amount), request_id=f"req-{i}")
        with pytest.raises(triton.InferenceServerException):
            client.infer("fraud", _inputs(5.0)[:2], request_id="bad")
        x = triton.InferInput("x", [1, 4], "FP32")
        x.set_data_from_numpy(np.zeros((1, 4), np.float32))
        for _ in range(3):
            client.infer("quickstart", [x])  # OK and sampled at 0: not recorded
        with pytest.raises(triton.InferenceServerException):
            client.infer("quickstart", [_inputs(1.0)[0]])  # an error: always recorded
        client.close()
        request_log = server.server.request_log
    # Stopping the server flushed the queue.
    assert request_log.counters() == {"written": 5, "dropped": 0, "failed": 0, "pending": 0, "truncated": 0}
    raw = b"".join(p.read_bytes() for p in logs.rglob("*") if p.is_file())
    assert b"31337" not in raw  # redacted values never reach the sink

    records = list(read_records(logs))
    by_id = {r["id"]: r for r in records if r["graph"] == "fraud"}
    assert set(by_id) == {"req-0", "req-1", "req-2", "bad"}
    ok = by_id["req-1"]
    assert ok["schema"] == "engine.request/1" and ok["version"] == "1" and ok["status"] == "OK"
    assert ok["sampled_because"] == "sample" and ok["latency_us"] > 0 and ok["time"].endswith("Z")
    assert len(ok["models"]["ip_risk"]) == 64
    assert ok["inputs"]["txn"] == {"redacted": True}
    amount = canonical_bytes(np.array([[2500.0]], np.float32))
    assert ok["inputs"]["amount"] == {"sha256": hmac.new(b"test-salt", amount, hashlib.sha256).hexdigest()}
    assert ok["inputs"]["amount"] != by_id["req-0"]["inputs"]["amount"]
    # values computed from the protected inputs are hidden too: log1p(amount), concat(…, txn)
    assert ok["nodes"]["log_amount"]["outputs"] == {"output": {"redacted": True}}
    assert ok["nodes"]["x"]["outputs"] == {"output": {"redacted": True}}
    assert ok["outputs"]["decision"]["datatype"] == "BOOL" and ok["outputs"]["score"]["shape"] == [1, 1]
    assert ok["branches"]["risk_route"] == {"deep": 1, "light": 0}
    assert set(ok["nodes"]) >= {"ip_risk", "deep", "score"} and "light" not in ok["nodes"]
    assert ok["nodes"]["deep"]["kind"] == "model" and ok["nodes"]["deep"]["rows"] == 1
    fetched = ok["features"]["user"]  # u0108's row of users.csv, fetched by the graph
    assert fetched["source"] == "users" and fetched["values"]["account_age_days"]["data"] == [[2.0]]
    bad = by_id["bad"]
    assert bad["status"] == "INVALID_ARGUMENT" and "txn" in bad["error"]
    quick = [r for r in records if r["graph"] == "quickstart"]
    assert len(quick) == 1 and quick[0]["status"] == "INVALID_ARGUMENT"
    assert quick[0]["sampled_because"] == "error"


def test_a_failing_sink_never_fails_a_request(graphs: Path, tmp_path: Path) -> None:
    server = ServerThread(
        graphs, request_log={"sink": "jsonl", "directory": "/dev/full/logs"}, feature_sources=SOURCES
    )
    with pytest.raises(Exception, match="request_log"):
        server.start()  # a directory that cannot exist is refused at start, loudly
    server.stop()


def test_kill_9_leaves_a_readable_log(example_graphs: Path, tmp_path: Path) -> None:
    """A server killed mid-write leaves whole lines; at most a final partial one, which readers skip."""
    import signal
    import socket
    import threading

    from engine.observability.log_reader import ReadStats
    from tests.integration.test_lifecycle import SERVING, EngineProcess

    logs = tmp_path / "logs"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    args = ("--port", str(port), "--workers", "1", "--request-log", str(logs))  # one process to kill -9
    engine = EngineProcess(str(example_graphs), *args)
    sent = 0
    stop = threading.Event()

    def traffic() -> None:
        nonlocal sent
        client = triton.InferenceServerClient(f"127.0.0.1:{port}")
        while not stop.is_set():
            try:
                client.infer("fraud", _inputs(float(sent % 3000)))
                sent += 1
            except triton.InferenceServerException:
                return
        client.close()

    try:
        engine.wait_for(SERVING)
        worker = threading.Thread(target=traffic, daemon=True)
        worker.start()
        deadline = time.monotonic() + 20
        while sent < 300 and time.monotonic() < deadline:
            time.sleep(0.05)
        engine.proc.send_signal(signal.SIGKILL)  # no drain, no flush
        engine.proc.wait(10)
    finally:
        stop.set()
        engine.stop()
    stats = ReadStats()
    records = list(read_records(logs, stats))
    assert sent >= 300 and len(records) > 0
    assert stats.truncated <= 1 and stats.corrupt == 0
    assert all(r["schema"] == "engine.request/1" and r["graph"] == "fraud" for r in records)
    assert len(records) <= sent


def test_describe_graph_reports_the_policy_and_the_logs_accounting(graphs: Path, tmp_path: Path) -> None:
    from engine.protocol.client import EngineClient
    from engine.protocol.generated.engine.v1 import engine_pb2 as epb

    logs = {"sink": "jsonl", "directory": str(tmp_path / "logs")}
    with ServerThread(graphs, request_log=logs, feature_sources=SOURCES) as server:
        client = triton.InferenceServerClient(server.url)
        for _ in range(4):
            client.infer("fraud", _inputs(10.0))
        client.close()
        admin = EngineClient(server.url)

        def described() -> epb.DescribeGraphResponse:
            return admin.admin(
                "DescribeGraph", epb.DescribeGraphRequest(name="fraud"), epb.DescribeGraphResponse
            )

        deadline = time.monotonic() + 10
        while described().request_log.written < 4 and time.monotonic() < deadline:
            time.sleep(0.1)  # records are written in the background
        d = described()
        admin.close()
    assert d.logging_enabled and d.logging_sample == 1.0
    assert (d.request_log.written, d.request_log.dropped, d.request_log.failed) == (4, 0, 0)
