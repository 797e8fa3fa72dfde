"""Holding one request-log record to a size in bytes (``request_log.max_record_bytes``).

Each tensor of a record is bounded (``max_tensor_elements``, ``MAX_ELEMENT_BYTES``), a record
is not: a graph with many inputs, outputs, node outputs, feature values and shadow results can
write a line of many megabytes. ``cap_record`` measures the record as the sinks write it (one
JSON line, ``encode_line``) and, when it is over the cap, replaces its largest tensors by
summaries, largest first, until it fits::

    {"datatype": "FP32", "shape": [20000, 4], "truncated": true, "elements": 80000, "bytes": 1638412}

(``bytes``: the size of the tensor's JSON it replaced) and names them, by the paths the logging
policy uses (``inputs.x``, ``outputs.y``, ``node.tensor``, ``node.field`` for feature values,
``shadow.NAME.outputs.y``), in a last field ``"truncated": [...]``. A record whose fixed fields
alone are over the cap (thousands of nodes) is written with every tensor summarised.

The measured line is kept on the record (``MeasuredRecord``), so the JSON Lines and CloudEvents
sinks write it instead of encoding the record a second time. Runs on the request log's sink
thread, with the record's construction, never on the event loop.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from typing import Any

TRUNCATED = "truncated"
"""The record field naming the summarised tensors (absent when none was)."""
_MARK = len(f',"{TRUNCATED}":')


class MeasuredRecord(dict[str, Any]):
    """A record with the JSON line it was measured as (``line``); changed after, it is stale."""

    __slots__ = ("line",)

    def __init__(self, record: Mapping[str, Any], line: bytes) -> None:
        super().__init__(record)
        self.line = line


def encode_line(record: Mapping[str, Any]) -> bytes:
    """The record as one JSON Lines line (compact, newline-terminated)."""
    if isinstance(record, MeasuredRecord):
        return record.line
    return json.dumps(record, separators=(",", ":")).encode() + b"\n"


def cap_record(record: dict[str, Any], max_bytes: int) -> tuple[dict[str, Any], list[str]]:
    """``record`` (changed in place) encoded within ``max_bytes``, and the paths it summarised.

    ``max_bytes`` 0: no cap. A record that is not JSON-serialisable is returned as it is, for the
    sink to count as failed."""
    try:
        line = encode_line(record)
    except (TypeError, ValueError):
        return record, []
    if not max_bytes or len(line) <= max_bytes:
        return MeasuredRecord(record, line), []
    over = len(line) - max_bytes
    found = sorted(_tensors(record), key=lambda t: -t[0])
    names: list[str] = []
    for size, path, holder, key in found:
        summary = summarised(holder[key], size)
        holder[key] = summary
        over -= size - _size(summary)
        if path not in names:  # a features node's values are in ``features`` and ``nodes``
            names.append(path)
        if over + _MARK + _size(names) <= 0:
            break
    record[TRUNCATED] = names
    return MeasuredRecord(record, encode_line(record)), names


def summarised(tensor: Mapping[str, Any], size: int) -> dict[str, Any]:
    """What stands for a tensor too large for its record: its type, shape, element count and the
    bytes its JSON took."""
    shape = list(tensor.get("shape", []))
    elements = tensor.get("elements", math.prod(shape))
    return {
        "datatype": tensor.get("datatype"),
        "shape": shape,
        "truncated": True,
        "elements": elements,
        "bytes": size,
    }


def _size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":")))


def _tensors(record: Mapping[str, Any]) -> Iterator[tuple[int, str, dict[str, Any], str]]:
    """(JSON size, policy path, the mapping holding it, its key) of every tensor that has data."""
    places: list[tuple[str, Any]] = [("inputs", record.get("inputs")), ("outputs", record.get("outputs"))]
    for node, entry in _items(record.get("nodes")):
        places.append((node, _get(entry, "outputs")))
    for node, entry in _items(record.get("features")):
        places.append((node, _get(entry, "values")))
    for shadow, entry in _items(record.get("shadow")):
        places.append((f"shadow.{shadow}.outputs", _get(entry, "outputs")))
        places.append((f"shadow.{shadow}.live", _get(entry, "live")))
    for prefix, holder in places:
        for name, tensor in _items(holder):
            if isinstance(tensor, dict) and "data" in tensor:
                yield _size(tensor), f"{prefix}.{name}", holder, name


def _items(value: Any) -> list[tuple[str, Any]]:
    return list(value.items()) if isinstance(value, dict) else []


def _get(entry: Any, key: str) -> Any:
    return entry.get(key) if isinstance(entry, dict) else None
