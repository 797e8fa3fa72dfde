"""A served graph fetching features from the real Redis, end to end over gRPC.

The fraud example's ``users`` source is pointed at Redis (through a TCP proxy of ours that
can stall), loaded with ``engine features load`` from the example CSV, and called with
tritonclient. Outputs must equal running the example models by hand on the same features;
a stalled store must be cut off by the node timeout (defaults, flagged in the request log,
or UNAVAILABLE naming the node with ``on_error: fail``); service comes back when it does.
"""

from __future__ import annotations

import csv
import json
import shutil
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import redis
import tritonclient.grpc as triton
import yaml

from engine import cli
from tests.adapters.proxy import stalling_store
from tests.server_thread import ServerThread

GRAPHS = Path(__file__).resolve().parents[2] / "graphs"
sys.path.insert(0, str(GRAPHS))
import build_models as bm  # noqa: E402

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def prefix() -> Iterator[str]:
    value = f"test:features:{uuid.uuid4().hex[:10]}:"
    yield value
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=value + "*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def _repository(tmp_path: Path, example_graphs: Path, redis_port: int, prefix: str, on_error: str) -> Path:
    """A graph repository holding the fraud example, its users source in Redis behind ``redis_port``."""
    root = tmp_path / "graphs"
    shutil.copytree(example_graphs / "fraud", root / "fraud")
    text = (root / "fraud" / "graph.yaml").read_text()
    (root / "fraud" / "graph.yaml").write_text(
        text.replace("    on_error: default             #", f"    on_error: {on_error}             #")
    )
    config = {
        "feature_sources": {
            "users": {
                "type": "redis",
                "url": f"redis://127.0.0.1:{redis_port}/0",
                "key_template": prefix + "user:{key}",
                "socket_timeout": "2s",
                "fields": {"account_age_days": "FP32", "txn_count_24h": "FP32", "devices_30d": "FP32"},
            }
        },
        "request_log": {"sink": "jsonl", "directory": str(tmp_path / "logs")},
    }
    (root / "engine.yaml").write_text(yaml.safe_dump(config))
    return root


def _users() -> dict[str, list[float]]:
    with (GRAPHS / "fraud" / "users.csv").open() as handle:
        return {row["user_id"]: [float(row[f]) for f in bm.USER_FEATURES] for row in csv.DictReader(handle)}


def _by_hand(amount: np.ndarray, user_rows: list[list[float]], txn: np.ndarray) -> np.ndarray:
    """The fraud graph's score computed with onnxruntime directly."""
    x = bm.fraud_x(amount, np.concatenate([np.array(user_rows, np.float32), txn], axis=1))

    def run(name: str, rows: np.ndarray) -> np.ndarray:
        session = ort.InferenceSession(str(GRAPHS / "fraud" / name), providers=["CPUExecutionProvider"])
        return session.run(["prob"], {"x": rows})[0]

    route = np.where(amount > bm.HIGH_AMOUNT, run("deep.onnx", x), run("light.onnx", x))
    return (run("ip_risk.onnx", x) + route) / 2


def _request(amount: np.ndarray, users: list[str], txn: np.ndarray) -> list[triton.InferInput]:
    a = triton.InferInput("amount", list(amount.shape), "FP32")
    a.set_data_from_numpy(amount)
    ids = np.array([[u.encode()] for u in users], dtype=np.object_)
    u = triton.InferInput("user_id", list(ids.shape), "BYTES")
    u.set_data_from_numpy(ids)
    t = triton.InferInput("txn", list(txn.shape), "FP32")
    t.set_data_from_numpy(txn)
    return [a, u, t]


def _records(tmp_path: Path, count: int) -> list[dict]:  # type: ignore[type-arg]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        lines = [
            line for f in sorted((tmp_path / "logs").glob("*.jsonl")) for line in f.read_text().splitlines()
        ]
        if len(lines) >= count:
            return [json.loads(line) for line in lines]
        time.sleep(0.05)
    raise AssertionError(f"expected {count} request-log records")


def _load_users(root: Path) -> None:
    """``engine features load users users.csv`` into Redis (straight, not through the proxy)."""
    config = yaml.safe_load((root / "engine.yaml").read_text())
    config["feature_sources"]["users"]["url"] = REDIS_URL
    direct = root.parent / "direct.yaml"
    direct.write_text(yaml.safe_dump({"feature_sources": config["feature_sources"]}))
    assert (
        cli.main(["features", "load", "users", str(GRAPHS / "fraud" / "users.csv"), "--config", str(direct)])
        == 0
    )


def test_graph_outputs_equal_the_models_on_fetched_features(
    tmp_path: Path, example_graphs: Path, prefix: str
) -> None:
    root = _repository(tmp_path, example_graphs, 6379, prefix, "default")
    _load_users(root)
    users = _users()
    amount = np.array([[1500.0], [20.0], [250.0]], np.float32)
    ids = ["u0007", "u0420", "not-a-user"]
    txn = np.array([[0.7, 1, 3], [0.1, 0, 14], [0.3, 0, 22]], np.float32)
    with ServerThread(root) as server:
        client = triton.InferenceServerClient(server.url)
        result = client.infer("fraud", _request(amount, ids, txn))
        score = result.as_numpy("score")
    rows = [users["u0007"], users["u0420"], [0.0, 0.0, 1.0]]  # the unknown user gets the defaults
    np.testing.assert_allclose(score, _by_hand(amount, rows, txn), rtol=1e-5, atol=1e-6)
    (record,) = _records(tmp_path, 1)
    entry = record["features"]["user"]
    assert entry["source"] == "users"
    assert entry["status"]["account_age_days"] == ["present", "present", "missing"]
    assert entry["values"]["account_age_days"]["data"] == [[users["u0007"][0]], [users["u0420"][0]], [0.0]]


def test_a_stalled_store_gets_defaults_then_recovers(
    tmp_path: Path, example_graphs: Path, prefix: str
) -> None:
    with stalling_store(6379) as (proxy, proxy_loop):
        root = _repository(tmp_path, example_graphs, proxy.port, prefix, "default")
        _load_users(root)
        users = _users()
        amount, txn = np.array([[20.0]], np.float32), np.array([[0.1, 0, 14]], np.float32)
        with ServerThread(root) as server:
            client = triton.InferenceServerClient(server.url)
            fresh = client.infer("fraud", _request(amount, ["u0001"], txn)).as_numpy("score")
            proxy_loop.soon(proxy.stall)
            # u0002 is not cached yet: its fetch hangs until the node's 20 ms timeout
            start = time.monotonic()
            stalled = client.infer("fraud", _request(amount, ["u0002"], txn), client_timeout=10).as_numpy(
                "score"
            )
            elapsed = time.monotonic() - start
            proxy_loop.soon(proxy.resume)
            recovered = client.infer("fraud", _request(amount, ["u0002"], txn)).as_numpy("score")
    assert elapsed < 5  # cut off by the node timeout, far below the store's 2 s socket timeout
    np.testing.assert_allclose(fresh, _by_hand(amount, [users["u0001"]], txn), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stalled, _by_hand(amount, [[0.0, 0.0, 1.0]], txn), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(recovered, _by_hand(amount, [users["u0002"]], txn), rtol=1e-5, atol=1e-6)
    statuses = [r["features"]["user"]["status"]["txn_count_24h"] for r in _records(tmp_path, 3)]
    assert statuses == [["present"], ["timed_out"], ["present"]]


def test_a_graph_loads_and_reloads_while_its_store_hangs(
    tmp_path: Path, example_graphs: Path, prefix: str
) -> None:
    """The load-time warm-up never asks a store: a hung store rejects no version."""
    with stalling_store(6379) as (proxy, proxy_loop):
        proxy.stall()  # not serving yet: nothing flows through it
        root = _repository(tmp_path, example_graphs, proxy.port, prefix, "fail")
        amount, txn = np.array([[20.0]], np.float32), np.array([[0.1, 0, 14]], np.float32)
        with ServerThread(root) as server:
            client = triton.InferenceServerClient(server.url)
            assert client.is_model_ready("fraud")
            graph = root / "fraud" / "graph.yaml"
            graph.write_text(graph.read_text().replace("version: 1\n", "version: 2\n", 1))
            client.load_model("fraud")
            assert client.get_model_metadata("fraud").versions == ["2"]
            with pytest.raises(triton.InferenceServerException) as caught:
                client.infer("fraud", _request(amount, ["u0004"], txn), client_timeout=10)
            proxy_loop.soon(proxy.resume)
            client.infer("fraud", _request(amount, ["u0004"], txn))
    assert caught.value.status() == "StatusCode.UNAVAILABLE"


def test_on_error_fail_answers_unavailable_naming_the_node(
    tmp_path: Path, example_graphs: Path, prefix: str
) -> None:
    with stalling_store(6379) as (proxy, proxy_loop):
        root = _repository(tmp_path, example_graphs, proxy.port, prefix, "fail")
        amount, txn = np.array([[20.0]], np.float32), np.array([[0.1, 0, 14]], np.float32)
        with ServerThread(root) as server:
            client = triton.InferenceServerClient(server.url)
            client.infer("fraud", _request(amount, ["u0001"], txn))  # connected and answering
            proxy_loop.soon(proxy.stall)
            with pytest.raises(triton.InferenceServerException) as caught:
                client.infer("fraud", _request(amount, ["u0003"], txn), client_timeout=10)
            proxy_loop.soon(proxy.resume)
            client.infer("fraud", _request(amount, ["u0003"], txn))  # and back
    assert caught.value.status() == "StatusCode.UNAVAILABLE"
    assert "node 'user'" in caught.value.message() and "did not answer within its timeout of 20 ms" in (
        caught.value.message()
    )
