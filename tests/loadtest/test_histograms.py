"""HDR histograms merged across generator processes equal one histogram over the same values."""

from __future__ import annotations

import multiprocessing

import numpy as np

from loadtest import histograms
from loadtest.metrics import histogram_quantile


def _encode_chunk(values: list[int]) -> bytes:
    h = histograms.new()
    for v in values:
        histograms.record(h, v)
    return histograms.encode(h)


def test_merged_histograms_from_several_processes_equal_a_single_one() -> None:
    rng = np.random.default_rng(3)
    values = np.concatenate([rng.lognormal(7, 1.2, 30_000), rng.uniform(1e5, 3e6, 300)]).astype(int) + 1
    single = histograms.new()
    for v in values.tolist():
        histograms.record(single, v)
    chunks = [values[i::4].tolist() for i in range(4)]
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        encoded = pool.map(_encode_chunk, chunks)
    merged = histograms.merge(encoded)
    assert merged.get_total_count() == single.get_total_count() == len(values)
    assert histograms.buckets(merged) == histograms.buckets(single)
    assert histograms.summary(merged) == histograms.summary(single)
    # and both agree with the exact percentile to HDR's 3 significant digits
    for q in (50, 90, 99, 99.9):
        exact = np.percentile(values, q, method="inverted_cdf")
        assert abs(histograms.percentile(merged, q) - exact) <= exact * 1e-3 + 1


def test_histogram_quantile_matches_promql() -> None:
    buckets = [(0.01, 50.0), (0.1, 90.0), (1.0, 100.0), (float("inf"), 100.0)]
    assert histogram_quantile(0.5, buckets) == 0.01
    assert histogram_quantile(0.9, buckets) == 0.1
    assert abs(histogram_quantile(0.95, buckets) - 0.55) < 1e-9
    assert histogram_quantile(0.99, [(float("inf"), 0.0)]) is None
