"""Shadow numbers of several workers merged (``engine.shadow.merge``): the merged report equals the
report of one comparison that saw every request, whatever way the requests were split."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine.shadow.compare import ERROR, SHED, TIMEOUT, ShadowComparison, ShadowComparisons, ShadowConfig
from engine.shadow.histogram import LogHistogram
from engine.shadow.merge import merge_reports
from engine.shadow.rules import CompareKind, CompareRule

RULES = {
    "prob": CompareRule(abs_tol=0.01, rel_tol=0.05),
    "label": CompareRule(kind=CompareKind.CLASS, max_classes=8),
    "score": CompareRule(kind=CompareKind.SCORE, window=5000, column=0),
}


def _requests(n: int, seed: int = 7) -> list[tuple[dict[str, np.ndarray], dict[str, np.ndarray], int, int]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        rows = int(rng.integers(1, 40))  # some requests take numpy's path, some the per-row one
        prob = rng.random((rows, 1))
        shadow_prob = prob + rng.normal(0, 0.02, size=(rows, 1))
        labels = rng.integers(0, 6, size=(rows, 1))
        shadow_labels = np.where(rng.random((rows, 1)) < 0.8, labels, rng.integers(0, 6, size=(rows, 1)))
        live = {"prob": prob, "label": labels, "score": prob}
        shadow = {"prob": shadow_prob, "label": shadow_labels, "score": shadow_prob}
        out.append((live, shadow, int(rng.integers(100_000, 900_000)), int(rng.integers(100_000, 900_000))))
    return out


def _fold(comparison: ShadowComparison, requests: list, start: int = 0) -> None:
    for i, (live, shadow, live_ns, shadow_ns) in enumerate(requests, start):
        if i % 17 == 0:
            comparison.count((ERROR, TIMEOUT, SHED)[i % 3], f"failure {i}")
        else:
            comparison.observe(live, shadow, live_ns, shadow_ns)


def _shipped(comparison: ShadowComparison) -> dict:
    """The state as it travels between processes: through JSON."""
    return json.loads(json.dumps(comparison.state()))


def _config() -> ShadowConfig:
    return ShadowConfig("fraud", "v2", "deep", RULES)


@pytest.mark.parametrize("workers", [1, 2, 3, 5])
def test_merged_workers_report_what_one_process_would(workers: int) -> None:
    requests = _requests(60)  # under the score window: the window holds every row on both sides
    whole = ShadowComparison(_config())
    _fold(whole, requests)
    parts = [ShadowComparison(_config()) for _ in range(workers)]
    for i, request in enumerate(requests):  # round-robin, as connections spread over workers
        _fold(parts[i % workers], [request], i)
    merged = merge_reports([[_shipped(p)] for p in parts])
    expected = whole.snapshot()
    got = merged.graphs["fraud"]["v2"]
    assert got.counters == expected.counters
    assert got.latency == expected.latency
    for name in RULES:
        want, have = expected.outputs[name], got.outputs[name]
        assert (have.rows, have.agree, have.missing, have.mismatched) == (
            want.rows, want.agree, want.missing, want.mismatched,
        )  # fmt: skip
        assert have.abs_diff == want.abs_diff and have.rel_diff == want.rel_diff
        assert have.confusion == want.confusion
        if name == "score":
            assert have.window_rows == want.window_rows
            assert have.spearman == pytest.approx(want.spearman, rel=1e-12)
    assert expected.outputs["label"].confusion is not None
    assert len(expected.outputs["label"].confusion.labels) == 6


def test_labels_past_max_classes_merge_into_other_and_no_row_is_lost() -> None:
    rule = CompareRule(kind=CompareKind.CLASS, max_classes=3)
    config = ShadowConfig("g", "s", rules={"label": rule})
    left, right = ShadowComparison(config), ShadowComparison(config)
    left.observe({"label": np.array([[0], [1], [2], [3]])}, {"label": np.array([[0], [1], [2], [3]])}, 0, 0)
    right.observe({"label": np.array([[5], [4], [1]])}, {"label": np.array([[5], [1], [1]])}, 0, 0)
    out = merge_reports([[_shipped(left)], [_shipped(right)]]).graphs["g"]["s"].outputs["label"]
    assert out.confusion is not None
    assert out.confusion.labels == ["0", "1", "2", "(other)"]  # the first worker's three, then the rest
    assert sum(map(sum, out.confusion.counts)) == 7 and (out.rows, out.agree) == (7, 6)


def test_comparisons_of_several_graphs_stay_apart() -> None:
    first, second = ShadowComparisons(), ShadowComparisons()
    for comparisons in (first, second):
        comparisons.add(ShadowConfig("a", "s1", "", {"y": RULES["prob"]}))
        comparisons.add(ShadowConfig("b", "s2", "n", {"y": RULES["prob"]}))
    a = first.get("a", "s1")
    b = second.get("b", "s2")
    assert a is not None and b is not None
    a.observe({"y": np.ones((2, 1))}, {"y": np.ones((2, 1))}, 1000, 2000)
    b.observe({"y": np.ones((3, 1))}, {"y": np.zeros((3, 1))}, 1000, 2000)
    report = merge_reports([first.state(), second.state()])
    assert sorted(report.graphs) == ["a", "b"]
    assert report.graphs["a"]["s1"].outputs["y"].rows == 2
    assert report.graphs["b"]["s2"].outputs["y"].agree == 0
    assert report.graphs["b"]["s2"].target == "n"
    assert merge_reports([first.state("a")]).graphs.keys() == {"a"}


def test_outputs_compared_by_default_rules_merge_by_name() -> None:
    left = ShadowComparison(ShadowConfig("g", "s"))
    right = ShadowComparison(ShadowConfig("g", "s"))
    left.observe({"y": np.ones((1, 1))}, {"y": np.ones((1, 1))}, 0, 0)
    right.observe({"z": np.array([["a"]], dtype=object)}, {"z": np.array([["b"]], dtype=object)}, 0, 0)
    report = merge_reports([[left.state()], [right.state()]]).graphs["g"]["s"]
    assert report.outputs["y"].kind == "numeric" and report.outputs["z"].kind == "class"
    assert report.outputs["z"].confusion is not None and report.outputs["z"].confusion.labels == ["a", "b"]


def test_a_rule_that_differs_between_workers_is_refused() -> None:
    left = ShadowComparison(ShadowConfig("g", "s", rules={"y": CompareRule(abs_tol=0.1)}))
    right = ShadowComparison(ShadowConfig("g", "s", rules={"y": CompareRule(abs_tol=0.2)}))
    with pytest.raises(ValueError, match="output y"):
        merge_reports([[left.state()], [right.state()]])


def test_histogram_states_add_exactly() -> None:
    rng = np.random.default_rng(3)
    values = np.concatenate([rng.lognormal(0, 3, 5000), [0.0, 1e-12, 1e300]])
    whole = LogHistogram()
    whole.add(values)
    merged = LogHistogram()
    for chunk in np.array_split(values, 7):
        part = LogHistogram()
        part.add(chunk)
        merged.absorb_state(json.loads(json.dumps(part.state())))
    assert (merged.n, merged.min, merged.max, merged.mean()) == (whole.n, whole.min, whole.max, whole.mean())
    for q in (0.01, 0.5, 0.9, 0.99, 1.0):
        assert merged.quantile(q) == whole.quantile(q)
    with pytest.raises(ValueError, match="layout"):
        LogHistogram(signed=True).absorb_state(whole.state())
