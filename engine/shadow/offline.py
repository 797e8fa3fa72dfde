"""Shadow reports from recorded requests: the log's own shadow results, or a replay through a candidate.

``report_from_records`` folds each record's ``shadow`` field (layout in
``engine.shadow.outcome`` and ``docs/request-log.md``) into the same
``ShadowComparison`` the server uses, in record order, so a log holding every
request of a live run gives the live report. ``replay`` re-runs recorded
requests through a candidate and compares its outputs with the recorded ones.

Records come from any iterable of dicts, normally
``engine.observability.log_reader.read_records(path, stats)`` (wired by the CLI;
this package does not import the observability layer). A tensor that was
redacted, hashed or truncated when logged cannot be compared: its entry or
record is counted in ``OfflineStats.unreadable`` and left out.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.shadow.compare import (
    ERROR,
    OK,
    STATUSES,
    TIMEOUT,
    ShadowComparison,
    ShadowComparisons,
    ShadowConfig,
)
from engine.shadow.report import ShadowReport
from engine.shadow.rules import CompareRule, parse_rules
from engine.tensors import DataType

Record = Mapping[str, Any]
Candidate = Callable[[dict[str, np.ndarray], dict[str, Any] | None], Awaitable[dict[str, np.ndarray]]]


@dataclass
class OfflineStats:
    """``records`` read; ``used``: records that contributed; ``ignored``: another graph, no shadow
    results (report) or not OK (replay); ``unreadable``: redacted/hashed/truncated/malformed."""

    records: int = 0
    used: int = 0
    ignored: int = 0
    unreadable: int = 0


class Unreadable(ValueError):
    """A recorded tensor or entry that cannot be turned back into arrays."""


def tensor_from_json(tensor: object) -> np.ndarray:
    """A record's tensor (``{"datatype", "shape", "data"}``) as the array that was logged."""
    if not isinstance(tensor, Mapping) or "data" not in tensor or tensor.get("truncated"):
        raise Unreadable(f"not a whole logged tensor: {str(tensor)[:80]}")
    try:
        datatype = DataType.parse(str(tensor["datatype"]))
        shape = [int(d) for d in tensor["shape"]]
        if datatype is DataType.BYTES:
            flat = [_element(e) for e in np.array(tensor["data"], dtype=object).reshape(-1)]
            array = np.empty(len(flat), dtype=object)
            array[:] = flat
            return array.reshape(shape)
        return np.array(tensor["data"], dtype=datatype.numpy_dtype).reshape(shape)
    except (KeyError, TypeError, ValueError) as exc:
        raise Unreadable(f"malformed tensor: {exc}") from None


def tensors_from_json(tensors: object) -> dict[str, np.ndarray]:
    if not isinstance(tensors, Mapping):
        raise Unreadable("expected a mapping of tensors")
    return {str(name): tensor_from_json(t) for name, t in tensors.items()}


def _element(value: object) -> bytes:
    if isinstance(value, Mapping) and "b64" in value:
        return base64.b64decode(str(value["b64"]))
    return str(value).encode()


def report_from_records(
    records: Iterable[Record], graph: str | None = None, stats: OfflineStats | None = None
) -> ShadowReport:
    """The shadow report of the records' ``shadow`` fields (every graph, or only ``graph``)."""
    stats = stats if stats is not None else OfflineStats()
    comparisons = ShadowComparisons()
    for record in records:
        stats.records += 1
        entries = record.get("shadow")
        if (graph is not None and record.get("graph") != graph) or not entries:
            stats.ignored += 1
            continue
        stats.used += 1
        for name, entry in entries.items():
            try:
                _fold(comparisons, record, str(name), entry)
            except Unreadable:
                stats.unreadable += 1
    return comparisons.report()


def _fold(comparisons: ShadowComparisons, record: Record, shadow: str, entry: Any) -> None:
    if not isinstance(entry, Mapping) or entry.get("status") not in STATUSES:
        raise Unreadable(f"shadow {shadow}: not a shadow result")
    status, target = entry["status"], str(entry.get("target", ""))
    graph = str(record.get("graph", ""))
    if status != OK:
        comparison = comparisons.get(graph, shadow) or comparisons.add(ShadowConfig(graph, shadow, target))
        comparison.count(status, str(entry.get("error", "")))
        return
    try:
        rules: dict[str, CompareRule] = parse_rules(entry.get("compare") or None)
    except ValueError as exc:
        raise Unreadable(str(exc)) from None
    shadow_outputs = tensors_from_json(entry.get("outputs", {}))
    live = tensors_from_json(_live_tensors(record, entry, target))
    comparison = comparisons.add(ShadowConfig(graph, shadow, target, rules))
    live_ns = int(entry.get("live_duration_us", 0)) * 1000
    comparison.observe(live, shadow_outputs, live_ns, int(entry.get("duration_us", 0)) * 1000)


def _live_tensors(record: Record, entry: Mapping[str, Any], target: str) -> object:
    """The live values compared: the entry's ``live``, else the target node's outputs, else ``outputs``."""
    if "live" in entry:
        return entry["live"]
    if target:
        node = (record.get("nodes") or {}).get(target)
        if not isinstance(node, Mapping):
            raise Unreadable(f"the record has no outputs of node {target} (log with nodes: true)")
        return node.get("outputs", {})
    return record.get("outputs", {})


async def replay(
    records: Iterable[Record],
    run_candidate: Candidate,
    *,
    graph: str,
    rules: Mapping[str, CompareRule] | None = None,
    shadow: str = "candidate",
    timeout_s: float = 30.0,
    concurrency: int = 8,
    stats: OfflineStats | None = None,
) -> ShadowReport:
    """Re-run ``graph``'s OK records through ``run_candidate(inputs, features)`` and compare its outputs
    with the recorded ones, in record order. Live latency is the recorded ``latency_us``."""
    stats = stats if stats is not None else OfflineStats()
    comparison = ShadowComparison(ShadowConfig(graph, shadow, "", dict(rules or {}), 1.0, timeout_s))
    batch: list[tuple[dict[str, np.ndarray], dict[str, Any] | None, dict[str, np.ndarray], int]] = []
    for record in records:
        stats.records += 1
        if record.get("graph") != graph or record.get("status") != "OK":
            stats.ignored += 1
            continue
        try:
            inputs, live = tensors_from_json(record.get("inputs")), tensors_from_json(record.get("outputs"))
        except Unreadable:
            stats.unreadable += 1
            continue
        stats.used += 1
        batch.append((inputs, record.get("features") or None, live, int(record.get("latency_us", 0)) * 1000))
        if len(batch) >= concurrency:
            await _replay_batch(comparison, run_candidate, batch, timeout_s)
    await _replay_batch(comparison, run_candidate, batch, timeout_s)
    return ShadowReport({graph: {shadow: comparison.snapshot()}})


async def _replay_batch(
    comparison: ShadowComparison,
    run_candidate: Candidate,
    batch: list[tuple[dict[str, np.ndarray], dict[str, Any] | None, dict[str, np.ndarray], int]],
    timeout_s: float,
) -> None:
    """Run the batch concurrently, then fold the results in record order (so the report is deterministic)."""

    async def one(inputs: dict[str, np.ndarray], features: dict[str, Any] | None) -> tuple[Any, int, str]:
        started = time.perf_counter_ns()
        try:
            async with asyncio.timeout(timeout_s):
                outputs = await run_candidate(inputs, features)
        except TimeoutError:
            return TIMEOUT, 0, ""
        except Exception as exc:
            return ERROR, 0, f"{type(exc).__name__}: {exc}"
        return outputs, time.perf_counter_ns() - started, ""

    results = await asyncio.gather(*(one(inputs, features) for inputs, features, _, _ in batch))
    for (_, _, live, live_ns), (outputs, duration_ns, error) in zip(batch, results, strict=True):
        if isinstance(outputs, str):
            comparison.count(outputs, error)
        else:
            comparison.observe(live, outputs, live_ns, duration_ns)
    batch.clear()
