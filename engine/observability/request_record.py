"""One request-log record (schema ``engine.request/1``) built from plain values.

``build_record`` is pure: numpy arrays and ``NodeEvent``s in, a JSON-ready
``dict`` out, with the graph's policy applied — redacted tensors become
``{"redacted": true}`` before anything else sees them, hashed ones
``{"sha256": HMAC-SHA256(key, canonical bytes)}``, large ones are truncated.
The schema is documented field by field in ``docs/request-log.md``.

The policy is any object with the attributes of ``engine.graph.LoggingPolicy``
(``nodes``, ``redact``, ``hash``, ``max_tensor_elements``): observability does
not import the graph layer.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import struct
import time
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np

from engine.interfaces import FEATURE_STATUS_NAMES, NodeEvent
from engine.shadow.outcome import ShadowOutcome, shadow_field
from engine.tensors import DataType

SCHEMA = "engine.request/1"
EVENT_SCHEMA = "engine.event/1"
"""A server event in the request log (a rollout's transition), beside the request records."""
HASH_KEY_ENV = "ENGINE_LOG_HASH_KEY"
REDACTED: dict[str, Any] = {"redacted": True}
MAX_ID_CHARS = 256
"""A request id longer than this is cut to it in the record (ids are the caller's to choose)."""
MAX_ELEMENT_BYTES = 1024
"""A BYTES element longer than this keeps only its first this-many bytes in a record: a record's
size is bounded by ``max_tensor_elements`` times this, not by what a caller sends."""


class RecordPolicy(Protocol):
    nodes: bool
    redact: frozenset[str]
    hash: frozenset[str]
    max_tensor_elements: int


def hash_key_from_env(required: bool) -> bytes | None:
    """The HMAC key from ``ENGINE_LOG_HASH_KEY``; ValueError when ``required`` and unset."""
    raw = os.environ.get(HASH_KEY_ENV, "")
    if not raw:
        if required:
            raise ValueError(
                f"request log: a graph hashes logged fields but {HASH_KEY_ENV} is not set; "
                "set it to a secret (values are never hashed unsalted)"
            )
        return None
    return raw.encode()


def rfc3339(time_ns: int) -> str:
    """``2026-01-31T12:00:00.123456Z`` (UTC, microseconds)."""
    return datetime.fromtimestamp(time_ns // 1000 / 1e6, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def build_record(
    *,
    request_id: str,
    trace_id: str,
    graph: str,
    version: str,
    models: Mapping[str, str],
    inputs: Mapping[str, np.ndarray],
    outputs: Mapping[str, np.ndarray],
    events: Iterable[NodeEvent],
    status: str,
    error: str,
    latency_us: int,
    policy: RecordPolicy,
    sampled_because: str,
    hash_key: bytes | None = None,
    time_ns: int | None = None,
    shadows: Mapping[str, ShadowOutcome] | None = None,
    violations: Iterable[str] = (),
    protocol: str = "grpc",
    model_sources: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The record of one request. ``request_id`` "" gets a generated id; ``time_ns`` is wall time."""
    if policy.hash and not hash_key:
        raise ValueError(f"request log: hashing is configured but no key was given ({HASH_KEY_ENV})")
    shaper = _Shaper(policy, hash_key)
    nodes: dict[str, Any] = {}
    branches: dict[str, dict[str, int]] = {}
    features: dict[str, Any] = {}
    for event in events:
        if event.branch is not None:
            branches[event.node] = dict(event.branch)
        if event.feature_status is not None:
            features[event.node] = _features_entry(event, shaper)
        if policy.nodes:
            entry: dict[str, Any] = {
                "kind": event.kind,
                "duration_us": event.duration_ns // 1000,
                "rows": event.rows,
                "outputs": {
                    t: shaper.tensor(f"{event.node}.{t}", a, event.node) for t, a in event.outputs.items()
                },
            }
            if event.branch is not None:
                entry["branch"] = dict(event.branch)
            if event.error is not None:
                entry["error"] = event.error
            nodes[event.node] = entry
    record: dict[str, Any] = {
        "schema": SCHEMA,
        "id": (request_id or uuid.uuid4().hex)[:MAX_ID_CHARS],
        "trace_id": trace_id,
        "time": rfc3339(time.time_ns() if time_ns is None else time_ns),
        "graph": graph,
        "version": version,
        "models": dict(models),
        **({"model_sources": dict(model_sources)} if model_sources else {}),
        "inputs": {n: shaper.tensor(f"inputs.{n}", a) for n, a in inputs.items()},
        "features": features,
    }
    if policy.nodes:
        record["nodes"] = nodes
    record.update(
        branches=branches,
        outputs={n: shaper.tensor(f"outputs.{n}", a) for n, a in outputs.items()},
        shadow=shadow_field(shadows, shaper.tensor, include_live=not policy.nodes) if shadows else {},
        status=status,
        error=error,
        latency_us=latency_us,
        sampled_because=sampled_because,
        protocol=protocol,
    )
    flagged = list(violations)
    if flagged:  # ``flag`` data-contract violations: served, and said so here
        record["violations"] = flagged
    return record


def _features_entry(event: NodeEvent, shaper: _Shaper) -> dict[str, Any]:
    """``{"source", "values": {field: tensor}, "status": {field: [name per row]}}`` of a features node."""
    assert event.feature_status is not None
    return {
        "source": event.source or "",
        "values": {
            field: shaper.tensor(f"{event.node}.{field}", array, event.node)
            for field, array in event.outputs.items()
        },
        "status": {
            field: [FEATURE_STATUS_NAMES[int(s)] for s in statuses[: shaper.limit].tolist()]
            for field, statuses in event.feature_status.items()
        },
    }


class _Shaper:
    def __init__(self, policy: RecordPolicy, key: bytes | None) -> None:
        self.redact = policy.redact
        self.hash = policy.hash
        self.limit = policy.max_tensor_elements
        self.key = key

    def tensor(self, path: str, array: np.ndarray, node: str | None = None) -> dict[str, Any]:
        wild = f"{node}.*" if node is not None else ""
        if path in self.redact or wild in self.redact:
            return dict(REDACTED)
        if path in self.hash or wild in self.hash:
            assert self.key is not None
            return {"sha256": hmac.new(self.key, canonical_bytes(array), hashlib.sha256).hexdigest()}
        return tensor_json(array, self.limit)


def tensor_json(array: np.ndarray, limit: int) -> dict[str, Any]:
    """``{"datatype", "shape", "data"}`` with nested-list data; truncated past ``limit`` elements."""
    array = np.asarray(array)
    datatype = _datatype(array)
    out: dict[str, Any] = {"datatype": datatype.value, "shape": list(array.shape)}
    view = array if array.size <= limit else array.reshape(-1)[:limit]
    data = view.tolist()
    cut = 0
    if datatype is DataType.BYTES:
        longest = max((len(v) for v in view.reshape(-1).tolist()), default=0)
        if longest > MAX_ELEMENT_BYTES:
            cut = longest
            data = _clipped(data)
        data = _text_tree(data)
    out["data"] = data
    if view is not array or cut:
        out["truncated"] = True
        out["elements"] = int(array.size)
    if cut:
        out["element_bytes"] = cut  # the longest element's real size
    return out


def _clipped(value: Any) -> Any:
    if isinstance(value, list):
        return [_clipped(v) for v in value]
    return value[:MAX_ELEMENT_BYTES]


def _datatype(array: np.ndarray) -> DataType:
    dtype = array.dtype
    return DataType.from_numpy(dtype if dtype.isnative else dtype.newbyteorder("="))


def _text_tree(value: Any) -> Any:
    if isinstance(value, list):
        return [_text_tree(v) for v in value]
    if isinstance(value, str):
        return value
    raw = bytes(value)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return {"b64": base64.b64encode(raw).decode("ascii")}


def canonical_bytes(array: np.ndarray) -> bytes:
    """What a hash covers: datatype, shape, then the elements as on the V2 wire.

    Numbers little-endian in C order; BYTES elements each prefixed by a 4-byte little-endian length.
    """
    array = np.asarray(array)
    datatype = _datatype(array)
    head = json.dumps([datatype.value, list(array.shape)], separators=(",", ":")).encode() + b"\n"
    if datatype is DataType.BYTES:
        parts = []
        for item in array.reshape(-1).tolist():
            raw = item.encode() if isinstance(item, str) else bytes(item)
            parts.append(struct.pack("<I", len(raw)) + raw)
        return head + b"".join(parts)
    return head + np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


def event_record(event: str, graph: str, **fields: Any) -> dict[str, Any]:
    """One server event as a request-log line:
    ``{"schema": "engine.event/1", "time", "event", "graph", ...}``."""
    return {"schema": EVENT_SCHEMA, "time": rfc3339(time.time_ns()), "event": event, "graph": graph, **fields}
