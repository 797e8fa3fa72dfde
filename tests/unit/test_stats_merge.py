"""Counters of several workers summed (``GraphStats.to_state`` / ``from_state`` / ``merge_stats``)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine.execution.stats import GraphStats, merge_stats


def _stats(seed: int) -> GraphStats:
    rng = np.random.default_rng(seed)
    stats = GraphStats("fraud", "2")
    for _ in range(50):
        ok = bool(rng.random() < 0.9)
        stats.record_request(
            ok=ok, total_ns=int(rng.integers(1e5, 1e7)), decode_ns=10, infer_ns=100, encode_ns=5,
            rows=int(rng.integers(1, 9)), code="OK" if ok else "INVALID_ARGUMENT",
        )  # fmt: skip
        node = stats.node("score", "model")
        node.record(ok, int(rng.integers(1e4, 1e6)), rows=3, queue_ns=7)
        if seed % 2:
            node.count_batch(int(rng.integers(1, 64)))
        stats.node("features", "features").count_features(rng.integers(0, 3, size=(4, 2)).astype(np.uint8))
    return stats


def test_a_state_round_trips_through_json() -> None:
    stats = _stats(1)
    assert GraphStats.from_state(json.loads(json.dumps(stats.to_state()))) == stats


def test_merged_counters_are_the_sums() -> None:
    parts = [_stats(seed) for seed in range(4)]
    before = [GraphStats.from_state(p.to_state()) for p in parts]
    merged = merge_stats(parts)
    assert merged.success.count == sum(p.success.count for p in parts)
    assert merged.fail.ns == sum(p.fail.ns for p in parts)
    assert merged.inference_count == sum(p.inference_count for p in parts)
    assert merged.by_code["INVALID_ARGUMENT"].count == sum(
        p.by_code["INVALID_ARGUMENT"].count for p in parts if "INVALID_ARGUMENT" in p.by_code
    )
    node = merged.nodes["score"]
    latencies = [p.nodes["score"].latency.counts for p in parts]
    assert node.latency.counts == [sum(c) for c in zip(*latencies, strict=True)]
    assert node.batch_rows == sum(p.nodes["score"].batch_rows for p in parts)
    assert node.batch_sizes is not None and sum(node.batch_sizes) == sum(
        sum(p.nodes["score"].batch_sizes or []) for p in parts
    )
    assert merged.nodes["features"].feature_values == [
        sum(v) for v in zip(*(p.nodes["features"].feature_values for p in parts), strict=True)
    ]
    assert merged.last_inference_ms == max(p.last_inference_ms for p in parts)
    assert parts == before  # the parts themselves are left as they were


def test_other_versions_do_not_merge() -> None:
    with pytest.raises(ValueError, match="cannot merge"):
        merge_stats([GraphStats("a", "1"), GraphStats("a", "2")])
