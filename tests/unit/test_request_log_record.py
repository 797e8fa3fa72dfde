"""``build_record``: every field from a real run of the example graph; redaction, hashing, truncation."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from engine.execution import PlanRunner
from engine.graph import CompiledGraph
from engine.graph.values.logging_policy import HASH_KEY_ENV, LoggingPolicy
from engine.graph.values.spec import ModelNode
from engine.observability.request_log import SCHEMA, NodeEventLog, build_record
from engine.observability.request_record import canonical_bytes, hash_key_from_env, tensor_json
from tests.unit.graph_cases import FRAUD, load

KEY = b"k1"


def _models(graph: CompiledGraph) -> dict[str, str]:
    return {n.common.name: graph.models[n.path].sha256 for n in graph.spec.nodes if isinstance(n, ModelNode)}


async def _record(tmp_path: Path, policy_yaml: str, amount: float = 1250.0, **overrides: object) -> dict:
    graph = load(tmp_path, FRAUD + policy_yaml)
    inputs = {
        "amount": np.array([[amount]], np.float32),
        "features": np.arange(6, dtype=np.float32).reshape(1, 6),
    }
    events = NodeEventLog()
    outs = await PlanRunner(graph.plan).run(list(inputs.values()), observer=events)
    outputs = dict(zip([o.name for o in graph.spec.outputs], outs, strict=True))
    args: dict = dict(
        request_id="req-1",
        trace_id="0af7651916cd43dd8448eb211c80319c",
        graph=graph.name,
        version=graph.version,
        models=_models(graph),
        inputs=inputs,
        outputs=outputs,
        events=events.events,
        status="OK",
        error="",
        latency_us=1234,
        policy=graph.spec.logging,
        sampled_because="sample",
        hash_key=KEY,
        time_ns=1_767_225_600_123_456_789,
    )
    args.update(overrides)
    record = build_record(**args)
    return json.loads(json.dumps(record))  # it is plain JSON, and we check what a reader would see


@pytest.fixture(autouse=True)
def _hash_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(HASH_KEY_ENV, KEY.decode())


async def test_every_field_lands(tmp_path: Path) -> None:
    record = await _record(tmp_path, "logging: {sample: 1, nodes: true}\n")
    assert list(record) == [
        "schema", "id", "trace_id", "time", "graph", "version", "models", "inputs", "features",
        "nodes", "branches", "outputs", "shadow", "status", "error", "latency_us", "sampled_because",
        "protocol",
    ]  # fmt: skip
    assert record["protocol"] == "grpc"  # the door it came through
    assert record["schema"] == SCHEMA == "engine.request/1"
    assert record["id"] == "req-1"
    assert record["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert record["time"] == "2026-01-01T00:00:00.123456Z"
    assert (record["graph"], record["version"]) == ("fraud", "3")
    assert set(record["models"]) == {"ip_risk", "deep", "light"}
    assert all(re.fullmatch(r"[0-9a-f]{64}", v) for v in record["models"].values())
    assert record["inputs"]["amount"] == {"datatype": "FP32", "shape": [1, 1], "data": [[1250.0]]}
    assert record["inputs"]["features"]["data"] == [[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]]
    assert record["branches"] == {"risk_route": {"deep": 1, "light": 0}}
    nodes = record["nodes"]
    assert set(nodes) == {"x", "ip_risk", "risk_route", "deep", "score", "decision"}  # light got no rows
    assert nodes["risk_route"]["kind"] == "switch" and nodes["risk_route"]["branch"] == {
        "deep": 1,
        "light": 0,
    }
    assert nodes["deep"]["kind"] == "model" and nodes["deep"]["rows"] == 1
    assert isinstance(nodes["deep"]["duration_us"], int)
    assert nodes["x"]["outputs"]["output"]["shape"] == [1, 7]
    assert record["outputs"]["decision"]["datatype"] == "BOOL"
    assert record["outputs"]["score"]["shape"] == [1, 1]
    assert (record["status"], record["error"], record["latency_us"]) == ("OK", "", 1234)
    assert record["sampled_because"] == "sample"
    assert record["features"] == {} and record["shadow"] == {}


async def test_nodes_are_left_out_unless_asked_and_ids_are_generated(tmp_path: Path) -> None:
    record = await _record(tmp_path, "logging: {sample: 1}\n", amount=5.0, request_id="")
    assert "nodes" not in record
    assert record["branches"] == {"risk_route": {"deep": 0, "light": 1}}
    assert re.fullmatch(r"[0-9a-f]{32}", record["id"])


async def test_redacted_values_never_reach_the_record(tmp_path: Path) -> None:
    secret = 987654.25
    record = await _record(
        tmp_path,
        "logging: {sample: 1, nodes: true, redact: [inputs.amount, x.output, score.output]}\n",
        secret,
    )
    text = json.dumps(record)
    assert "987654" not in text
    assert record["inputs"]["amount"] == {"redacted": True}
    assert record["nodes"]["x"]["outputs"]["output"] == {"redacted": True}
    assert record["nodes"]["score"]["outputs"]["output"] == {"redacted": True}
    assert record["outputs"]["score"] == {"redacted": True}  # served from score.output


async def test_hashing_is_keyed_and_stable(tmp_path: Path) -> None:
    policy = "logging: {sample: 1, hash: [inputs.amount]}\n"
    a = (await _record(tmp_path / "a", policy))["inputs"]["amount"]
    b = (await _record(tmp_path / "b", policy))["inputs"]["amount"]
    other_key = (await _record(tmp_path / "c", policy, hash_key=b"k2"))["inputs"]["amount"]
    other_value = (await _record(tmp_path / "d", policy, amount=7.0))["inputs"]["amount"]
    assert set(a) == {"sha256"} and re.fullmatch(r"[0-9a-f]{64}", a["sha256"])
    assert a == b
    assert a != other_key
    assert a != other_value
    assert "1250" not in json.dumps(a)


def test_hashing_never_runs_without_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    policy = LoggingPolicy(sample=1.0, hash=frozenset({"inputs.card"}))
    with pytest.raises(ValueError, match="no key"):
        build_record(
            request_id="r", trace_id="", graph="g", version="1", models={},
            inputs={"card": np.array([[b"4111"]], dtype=object)}, outputs={}, events=[],
            status="OK", error="", latency_us=1, policy=policy, sampled_because="sample",
        )  # fmt: skip
    monkeypatch.delenv(HASH_KEY_ENV)
    with pytest.raises(ValueError, match=HASH_KEY_ENV):
        hash_key_from_env(required=True)
    assert hash_key_from_env(required=False) is None


def test_bytes_and_truncation() -> None:
    card = np.array([[b"4111 1111"], [b"\xff\x00"]], dtype=object)
    assert tensor_json(card, 10) == {
        "datatype": "BYTES",
        "shape": [2, 1],
        "data": [["4111 1111"], [{"b64": "/wA="}]],
    }
    big = np.arange(3000, dtype=np.int64).reshape(3, 1000)
    out = tensor_json(big, 1024)
    assert out["truncated"] is True and out["elements"] == 3000 and out["shape"] == [3, 1000]
    assert out["data"] == list(range(1024))
    assert "truncated" not in tensor_json(big, 3000)


def test_canonical_bytes_cover_type_shape_and_values() -> None:
    a = np.array([[1.0]], np.float32)
    assert canonical_bytes(a) != canonical_bytes(a.astype(np.float64))
    assert canonical_bytes(a) != canonical_bytes(a.reshape(1))
    assert canonical_bytes(a) == canonical_bytes(a.astype(">f4"))  # byte order does not matter
    assert canonical_bytes(np.array([b"ab", b"c"], dtype=object)).endswith(
        b"\x02\x00\x00\x00ab\x01\x00\x00\x00c"
    )
