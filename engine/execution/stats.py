"""Per-graph and per-node counters: Triton-style ModelStatistics and Prometheus histograms.

The executor and the protocol edge add to these with plain integer arithmetic
(no locks: one event loop per process owns them; a scrape from another thread
reads a slightly stale but consistent-enough snapshot). Nothing here calls a
metrics library on the request path: the protocol edge turns these into
``ModelStatisticsResponse`` messages, and ``engine.observability.metrics`` into
Prometheus text when scraped.
"""

from __future__ import annotations

import dataclasses
import time
from bisect import bisect_left
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.interfaces import FEATURE_STATUS_NAMES

LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
    0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
"""Upper bounds (seconds) of the latency histograms; +Inf is implied."""
_BOUNDS_NS: tuple[int, ...] = tuple(round(b * 1e9) for b in LATENCY_BUCKETS_S)
BATCH_SIZE_BUCKETS: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384, 65536)
"""Upper bounds (rows) of the batch-size histogram of batching model nodes; +Inf is implied."""


@dataclass(slots=True)
class Duration:
    count: int = 0
    ns: int = 0

    def add(self, ns: int) -> None:
        self.count += 1
        self.ns += ns


@dataclass(slots=True)
class Histogram:
    """Counts per latency bucket (non-cumulative; the last bucket is +Inf) and their sum."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(_BOUNDS_NS) + 1))
    sum_ns: int = 0

    def observe(self, ns: int) -> None:
        self.counts[bisect_left(_BOUNDS_NS, ns)] += 1
        self.sum_ns += ns

    @property
    def count(self) -> int:
        return sum(self.counts)


@dataclass(slots=True)
class NodeStats:
    """One node (a "composing model" in Triton's terms)."""

    name: str
    kind: str
    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    latency: Histogram = field(default_factory=Histogram)
    queue: Duration = field(default_factory=Duration)  # of successful runs: waiting for a thread
    rows: int = 0
    batch_sizes: list[int] | None = None  # batching nodes: batches per BATCH_SIZE_BUCKETS bucket, +Inf last
    batch_rows: int = 0  # rows of those batches (the histogram's sum)
    last_inference_ms: int = 0
    feature_values: list[int] = field(default_factory=lambda: [0] * len(FEATURE_STATUS_NAMES))

    def count_features(self, status: np.ndarray) -> None:
        """Add a features node's per-value statuses (uint8 ``FeatureStatus``) to its counters."""
        counts = np.bincount(status.reshape(-1), minlength=len(FEATURE_STATUS_NAMES))
        for i in range(len(FEATURE_STATUS_NAMES)):
            self.feature_values[i] += int(counts[i])

    def count_batch(self, size: int) -> None:
        """One batch of ``size`` rows ran (counted by one of the requests that shared it)."""
        if self.batch_sizes is None:
            self.batch_sizes = [0] * (len(BATCH_SIZE_BUCKETS) + 1)
        self.batch_sizes[bisect_left(BATCH_SIZE_BUCKETS, size)] += 1
        self.batch_rows += size

    def record(self, ok: bool, duration_ns: int, rows: int, queue_ns: int = 0) -> None:
        # Once per node per request: the Duration and Histogram steps written out, not called.
        latency = self.latency
        latency.counts[bisect_left(_BOUNDS_NS, duration_ns)] += 1
        latency.sum_ns += duration_ns
        if ok:
            done, queue = self.success, self.queue
            done.count += 1
            done.ns += duration_ns
            queue.count += 1
            queue.ns += queue_ns
            self.rows += rows
        else:
            self.fail.add(duration_ns)
        self.last_inference_ms = time.time_ns() // 1_000_000


@dataclass(slots=True)
class GraphStats:
    """One graph version: request-level durations split as Triton does, and by status code."""

    name: str
    version: str
    nodes: dict[str, NodeStats] = field(default_factory=dict)
    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)
    by_code: dict[str, Histogram] = field(default_factory=dict)  # "OK", "INVALID_ARGUMENT", …
    inference_count: int = 0  # rows served
    execution_count: int = 0  # requests executed
    last_inference_ms: int = 0
    violations: dict[str, int] = field(default_factory=dict)  # "tensor|column|rule|action" -> rows

    def count_violation(self, tensor: str, column: str, rule: str, action: str, rows: int) -> None:
        """``rows`` rows of one request broke ``rule`` of a data contract (``action``: reject | flag)."""
        key = f"{tensor}|{column}|{rule}|{action}"
        self.violations[key] = self.violations.get(key, 0) + rows

    def node(self, name: str, kind: str) -> NodeStats:
        stats = self.nodes.get(name)
        if stats is None:
            stats = self.nodes[name] = NodeStats(name, kind)
        return stats

    def record_request(
        self,
        *,
        ok: bool,
        total_ns: int,
        decode_ns: int = 0,
        infer_ns: int = 0,
        encode_ns: int = 0,
        rows: int = 0,
        code: str = "",
    ) -> None:
        code = code or ("OK" if ok else "UNKNOWN")
        histogram = self.by_code.get(code)
        if histogram is None:
            histogram = self.by_code[code] = Histogram()
        histogram.counts[bisect_left(_BOUNDS_NS, total_ns)] += 1  # Histogram.observe, written out
        histogram.sum_ns += total_ns
        if not ok:
            self.fail.add(total_ns)
            return
        # Once per request: the Duration steps written out, not called.
        success, queue, decode, infer, encode = (
            self.success,
            self.queue,
            self.compute_input,
            self.compute_infer,
            self.compute_output,
        )
        success.count += 1
        success.ns += total_ns
        queue.count += 1
        decode.count += 1
        decode.ns += decode_ns
        infer.count += 1
        infer.ns += infer_ns
        encode.count += 1
        encode.ns += encode_ns
        self.inference_count += rows
        self.execution_count += 1
        self.last_inference_ms = time.time_ns() // 1_000_000

    def to_state(self) -> dict[str, Any]:
        """Every counter as JSON-able plain data (``from_state`` reads it back): what a worker ships."""
        return dataclasses.asdict(self)

    @classmethod
    def from_state(cls, data: Mapping[str, Any]) -> GraphStats:
        return cls(
            name=str(data["name"]),
            version=str(data["version"]),
            nodes={name: _node(node) for name, node in data["nodes"].items()},
            by_code={
                code: Histogram(list(h["counts"]), int(h["sum_ns"])) for code, h in data["by_code"].items()
            },
            inference_count=int(data["inference_count"]),
            execution_count=int(data["execution_count"]),
            last_inference_ms=int(data["last_inference_ms"]),
            violations={str(k): int(v) for k, v in data.get("violations", {}).items()},
            **{k: Duration(**data[k]) for k in _GRAPH_DURATIONS},
        )


_GRAPH_DURATIONS = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output")
_NODE_DURATIONS = ("success", "fail", "queue")


def _node(data: Mapping[str, Any]) -> NodeStats:
    sizes = data["batch_sizes"]
    return NodeStats(
        name=str(data["name"]),
        kind=str(data["kind"]),
        latency=Histogram(list(data["latency"]["counts"]), int(data["latency"]["sum_ns"])),
        rows=int(data["rows"]),
        batch_sizes=None if sizes is None else list(sizes),
        batch_rows=int(data["batch_rows"]),
        last_inference_ms=int(data["last_inference_ms"]),
        feature_values=list(data["feature_values"]),
        **{k: Duration(**data[k]) for k in _NODE_DURATIONS},
    )


def _add_duration(into: Duration, other: Duration) -> None:
    into.count += other.count
    into.ns += other.ns


def _add_histogram(into: Histogram, other: Histogram) -> None:
    into.counts = [a + b for a, b in zip(into.counts, other.counts, strict=True)]
    into.sum_ns += other.sum_ns


def _add_node(into: NodeStats, other: NodeStats) -> None:
    for key in _NODE_DURATIONS:
        _add_duration(getattr(into, key), getattr(other, key))
    _add_histogram(into.latency, other.latency)
    into.rows += other.rows
    if other.batch_sizes is not None:
        mine = into.batch_sizes or [0] * len(other.batch_sizes)
        into.batch_sizes = [a + b for a, b in zip(mine, other.batch_sizes, strict=True)]
    into.batch_rows += other.batch_rows
    into.last_inference_ms = max(into.last_inference_ms, other.last_inference_ms)
    into.feature_values = [a + b for a, b in zip(into.feature_values, other.feature_values, strict=True)]


def merge_stats(parts: Sequence[GraphStats]) -> GraphStats:
    """The counters of one graph version over several workers, summed (the newest last times)."""
    first = parts[0]
    merged = GraphStats.from_state(first.to_state())
    for other in parts[1:]:
        if (other.name, other.version) != (first.name, first.version):
            raise ValueError(f"cannot merge {other.name} {other.version} into {first.name} {first.version}")
        for key in _GRAPH_DURATIONS:
            _add_duration(getattr(merged, key), getattr(other, key))
        for code, histogram in other.by_code.items():
            _add_histogram(merged.by_code.setdefault(code, Histogram()), histogram)
        for name, node in other.nodes.items():
            _add_node(merged.node(name, node.kind), node)
        for key, rows in other.violations.items():
            merged.violations[key] = merged.violations.get(key, 0) + rows
        merged.inference_count += other.inference_count
        merged.execution_count += other.execution_count
        merged.last_inference_ms = max(merged.last_inference_ms, other.last_inference_ms)
    return merged
