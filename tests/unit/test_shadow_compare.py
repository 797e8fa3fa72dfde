"""The online aggregator: every figure checked against a hand computation on a fixed set.

Quantiles come from a log-bucket histogram: within 0.5% of the nearest-rank value
(``histogram.RELATIVE_ERROR``); max, mean and counts are exact.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine.shadow.compare import (
    ERROR,
    SHED,
    SKIPPED,
    TIMEOUT,
    ShadowComparison,
    ShadowComparisons,
    ShadowConfig,
)
from engine.shadow.histogram import RELATIVE_ERROR, LogHistogram
from engine.shadow.report import ShadowCounters
from engine.shadow.rules import CompareKind, CompareRule

BOUND = RELATIVE_ERROR + 1e-12


def _approx(value: float) -> object:
    return pytest.approx(value, rel=BOUND, abs=1e-12)


def _comparison(**rules: CompareRule) -> ShadowComparison:
    return ShadowComparison(ShadowConfig("fraud", "v2", "deep", rules))


def test_numeric_differences_match_the_hand_computation() -> None:
    c = _comparison(prob=CompareRule(abs_tol=0.05, rel_tol=0.1))
    # live 1, 2, 4, 0, 10 vs shadow 1.02, 2.5, 4, 0, 9, in two requests
    first = c.observe(
        {"prob": np.array([[1.0], [2.0], [4.0]])}, {"prob": np.array([[1.02], [2.5], [4.0]])}, 0, 0
    )
    second = c.observe({"prob": np.array([[0.0], [10.0]])}, {"prob": np.array([[0.0], [9.0]])}, 0, 0)
    # |d| = .02 .5 0 0 1; tolerance max(.05, .1 * max(|l|, |s|)) = .102 .25 .4 .05 1.0 -> row 2 disagrees
    assert (first["prob"].rows, first["prob"].agree) == (3, 2)
    assert (second["prob"].rows, second["prob"].agree) == (2, 2)
    out = c.snapshot().outputs["prob"]
    assert (out.kind, out.rows, out.agree, out.agreement) == ("numeric", 5, 4, 0.8)
    assert out.abs_diff is not None and out.rel_diff is not None
    assert out.abs_diff.mean == pytest.approx(1.52 / 5)  # exact sum
    assert out.abs_diff.p50 == _approx(0.02)  # sorted 0 0 .02 .5 1: rank 3
    assert out.abs_diff.p99 == 1.0  # rank 5 = the max, exact
    assert out.abs_diff.max == 1.0
    # rel = |d| / max(|l|, |s|) = .02/1.02, .5/2.5, 0, 0, 1/10
    assert out.rel_diff.p50 == _approx(0.02 / 1.02)
    assert out.rel_diff.max == pytest.approx(0.2)
    assert out.rel_diff.mean == pytest.approx((0.02 / 1.02 + 0.2 + 0.1) / 5)
    assert out.nonfinite == 0


def test_a_row_is_its_worst_element_and_nan_rows_disagree() -> None:
    c = _comparison(v=CompareRule(abs_tol=0.1))
    live = np.array([[1.0, 2.0], [np.nan, 1.0], [np.nan, 3.0], [np.inf, 0.0]])
    shadow = np.array([[1.05, 2.5], [np.nan, 1.0], [1.0, 3.0], [np.inf, 0.0]])
    verdict = c.observe({"v": live}, {"v": shadow}, 0, 0)["v"]
    # row 0: worst |d| .5, disagrees; row 1: NaN on both sides agrees; row 2: NaN vs 1 does not; row 3 equal
    assert (verdict.rows, verdict.agree) == (4, 2)
    out = c.snapshot().outputs["v"]
    assert out.nonfinite == 1
    assert out.abs_diff is not None and out.abs_diff.max == 0.5
    assert out.abs_diff.mean == pytest.approx(0.5 / 3)


def test_class_agreement_and_confusion_matrix() -> None:
    c = _comparison(decision=CompareRule(kind=CompareKind.CLASS))
    c.observe({"decision": np.array([0, 1, 1])}, {"decision": np.array([0, 1, 0])}, 0, 0)
    c.observe({"decision": np.array([2, 0, 1])}, {"decision": np.array([2, 0, 2])}, 0, 0)
    out = c.snapshot().outputs["decision"]
    assert (out.rows, out.agree) == (6, 4)
    assert out.confusion is not None
    assert out.confusion.labels == ["0", "1", "2"]
    assert out.confusion.counts == [[2, 0, 0], [1, 1, 1], [0, 0, 1]]  # rows live, columns shadow
    assert out.abs_diff is None


def test_a_probability_vector_is_classed_by_argmax() -> None:
    c = _comparison(p=CompareRule(kind=CompareKind.CLASS))
    verdict = c.observe(
        {"p": np.array([[0.9, 0.1], [0.2, 0.8]], dtype=np.float32)},
        {"p": np.array([[0.6, 0.4], [0.7, 0.3]], dtype=np.float32)},
        0,
        0,
    )["p"]
    assert (verdict.rows, verdict.agree) == (2, 1)
    confusion = c.snapshot().outputs["p"].confusion
    assert confusion is not None and confusion.labels == ["0", "1"] and confusion.counts == [[1, 0], [1, 0]]


def test_classes_past_the_limit_share_the_other_bucket() -> None:
    c = _comparison(d=CompareRule(kind=CompareKind.CLASS, max_classes=2))
    c.observe({"d": np.array([0, 1, 2, 3])}, {"d": np.array([0, 1, 2, 2])}, 0, 0)
    out = c.snapshot().outputs["d"]
    assert (out.rows, out.agree) == (4, 3)  # agreement compares the values themselves
    assert out.confusion is not None
    assert out.confusion.labels == ["0", "1", "(other)"]
    assert out.confusion.counts == [[1, 0, 0], [0, 1, 0], [0, 0, 2]]


def test_text_and_bool_classes_are_labelled_readably() -> None:
    c = _comparison(label=CompareRule(kind=CompareKind.CLASS), flag=CompareRule(kind=CompareKind.CLASS))
    live = {"label": np.array([b"fraud", b"ok"], dtype=object), "flag": np.array([[True], [False]])}
    shadow = {"label": np.array([b"fraud", b"fraud"], dtype=object), "flag": np.array([[True], [True]])}
    c.observe(live, shadow, 0, 0)
    outputs = c.snapshot().outputs
    assert outputs["label"].confusion is not None and outputs["label"].confusion.labels == ["fraud", "ok"]
    assert outputs["flag"].confusion is not None and outputs["flag"].confusion.labels == ["false", "true"]
    assert outputs["flag"].confusion.counts == [[0, 1], [0, 1]]


def test_spearman_over_the_rolling_window() -> None:
    c = _comparison(s=CompareRule(kind=CompareKind.SCORE, window=5))
    c.observe(
        {"s": np.array([[1.0], [2.0], [3.0], [4.0], [5.0]])},
        {"s": np.array([[2.0], [1.0], [4.0], [3.0], [5.0]])},
        0,
        0,
    )
    # ranks differ by 1 1 1 1 0: rho = 1 - 6 * 4 / (5 * 24) = 0.8
    assert c.snapshot().outputs["s"].spearman == pytest.approx(0.8)
    small = _comparison(s=CompareRule(kind=CompareKind.SCORE, window=3))
    for lv, sv in zip([1, 2, 3, 4, 5], [2, 1, 4, 3, 5], strict=True):
        small.observe({"s": np.array([float(lv)])}, {"s": np.array([float(sv)])}, 0, 0)
    out = small.snapshot().outputs["s"]
    # the last 3 rows: 3 4 5 vs 4 3 5 -> rho = 1 - 6 * 2 / (3 * 8) = 0.5
    assert (out.spearman, out.window_rows, out.rows) == (pytest.approx(0.5), 3, 5)


def test_spearman_with_ties_uses_average_ranks() -> None:
    c = _comparison(s=CompareRule(kind=CompareKind.SCORE))
    c.observe({"s": np.array([1.0, 1.0, 2.0])}, {"s": np.array([1.0, 2.0, 3.0])}, 0, 0)
    # ranks 1.5 1.5 3 vs 1 2 3: centred -.5 -.5 1 and -1 0 1 -> 1.5 / sqrt(1.5 * 2)
    assert c.snapshot().outputs["s"].spearman == pytest.approx(1.5 / math.sqrt(3.0))


def test_score_column_picks_the_positive_probability() -> None:
    c = _comparison(p=CompareRule(kind=CompareKind.SCORE, abs_tol=0.5))
    live = np.array([[0.9, 0.1], [0.5, 0.5], [0.2, 0.8]])
    shadow = np.array([[0.8, 0.2], [0.6, 0.4], [0.1, 0.9]])
    c.observe({"p": live}, {"p": shadow}, 0, 0)
    assert c.snapshot().outputs["p"].spearman == pytest.approx(1.0)


def test_latency_of_live_shadow_and_their_difference() -> None:
    c = _comparison(p=CompareRule())
    for live_ns, shadow_ns in ((1_000_000, 1_500_000), (2_000_000, 1_000_000), (3_000_000, 6_000_000)):
        c.observe({"p": np.zeros(1)}, {"p": np.zeros(1)}, live_ns, shadow_ns)
    latency = c.snapshot().latency
    assert latency.live.p50 == _approx(2000.0) and latency.live.max == 3000.0 and latency.live.mean == 2000.0
    assert latency.shadow.p50 == _approx(1500.0) and latency.shadow.p99 == 6000.0
    # differences +500, -1000, +3000 µs
    assert latency.diff.p50 == _approx(500.0)
    assert latency.diff.mean == pytest.approx(2500 / 3)
    assert latency.diff.max == 3000.0


def test_counters_add_up() -> None:
    c = _comparison(p=CompareRule())
    c.observe({"p": np.zeros(2)}, {"p": np.zeros(2)}, 0, 0)
    for status in (SKIPPED, SKIPPED, SHED, ERROR, TIMEOUT):
        c.count(status)
    c.count(ERROR, "RuntimeError: boom")
    assert c.counters() == ShadowCounters(sampled=5, skipped=2, run=1, shed=1, errors=2, timeouts=1)
    assert c.snapshot().last_error == "RuntimeError: boom"


def test_missing_and_mismatched_outputs_are_counted_not_raised() -> None:
    c = _comparison(p=CompareRule(), q=CompareRule())
    verdicts = c.observe({"p": np.zeros((2, 1)), "q": np.zeros(2)}, {"p": np.zeros((3, 1))}, 0, 0)
    assert verdicts == {}
    out = c.snapshot().outputs
    assert (out["p"].mismatched, out["q"].missing) == (1, 1)
    c.observe({"p": np.array([b"a"], dtype=object)}, {"p": np.array([b"b"], dtype=object)}, 0, 0)
    assert c.snapshot().outputs["p"].mismatched == 2
    assert "not numeric" in c.snapshot().last_error


def test_without_rules_every_common_output_is_compared_by_dtype() -> None:
    c = _comparison()
    c.observe(
        {"p": np.array([0.5]), "d": np.array([1]), "x": np.zeros(1)},
        {"p": np.array([0.5]), "d": np.array([2])},
        0,
        0,
    )
    outputs = c.snapshot().outputs
    assert sorted(outputs) == ["d", "p"]
    assert (outputs["p"].kind, outputs["d"].kind, outputs["d"].agree) == ("numeric", "class", 0)


def test_comparisons_by_graph_and_shadow_keep_numbers_until_rules_change() -> None:
    comparisons = ShadowComparisons()
    config = ShadowConfig("fraud", "v2", "deep", {"p": CompareRule()}, sample=0.5)
    first = comparisons.add(config)
    first.observe({"p": np.zeros(1)}, {"p": np.zeros(1)}, 0, 0)
    same = comparisons.add(ShadowConfig("fraud", "v2", "deep", {"p": CompareRule()}, sample=0.9))
    assert same is first and same.config.sample == 0.9
    changed = comparisons.add(ShadowConfig("fraud", "v2", "deep", {"p": CompareRule(abs_tol=1.0)}))
    assert changed is not first and changed.counters().run == 0
    comparisons.add(ShadowConfig("other", "s", ""))
    assert sorted(comparisons.report().graphs) == ["fraud", "other"]
    assert sorted(comparisons.report("fraud").graphs) == ["fraud"]


def test_histogram_quantiles_stay_within_the_documented_bound() -> None:
    rng = np.random.default_rng(7)
    values = rng.lognormal(mean=-3.0, sigma=2.0, size=5000)
    h = LogHistogram()
    h.add(values[:2500])
    for v in values[2500:2600]:
        h.add_one(float(v))
    h.add(values[2600:])
    ordered = np.sort(values)
    for q in (0.01, 0.1, 0.5, 0.9, 0.99, 0.999, 1.0):
        exact = ordered[math.ceil(q * len(values)) - 1]
        assert h.quantile(q) == pytest.approx(exact, rel=BOUND)
    assert h.max == ordered[-1] and h.quantile(1.0) == ordered[-1]
    assert h.mean() == pytest.approx(values.mean())


def test_signed_histogram_orders_negative_values_first() -> None:
    h = LogHistogram(low=1.0, high=1e6, signed=True)
    h.add(np.array([-300.0, -20.0, 0.0, 5.0, 4000.0]))
    assert h.quantile(0.2) == -300.0  # the exact min
    assert h.quantile(0.4) == _approx(-20.0)
    assert h.quantile(0.6) == 0.0
    assert h.quantile(0.8) == _approx(5.0)
    assert LogHistogram().quantile(0.5) is None
