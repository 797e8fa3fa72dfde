"""The monitoring package's numbers on plain data: PSI and JS distance against their definitions,
AUC against scikit-learn (ties included), the per-label merge of the workers' feedback answers."""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import roc_auc_score

from engine.monitoring.drift import js_distance, merge_drift, psi
from engine.monitoring.profile import profile_column
from engine.monitoring.quality import auc, merge_feedback


def test_psi_and_js_distance_follow_their_definitions() -> None:
    reference, live = np.array([50, 30, 20]), np.array([20, 30, 50])
    r, q = reference / 100, live / 100
    assert math.isclose(psi(reference, live), float(np.sum((q - r) * np.log(q / r))))
    m = (r + q) / 2
    divergence = 0.5 * np.sum(r * np.log2(r / m)) + 0.5 * np.sum(q * np.log2(q / m))
    assert math.isclose(js_distance(reference, live), math.sqrt(divergence))
    assert psi(reference, reference * 3) == 0.0 and js_distance(reference, reference) == 0.0
    assert math.isclose(js_distance(np.array([1, 0]), np.array([0, 1])), 1.0)


def test_auc_equals_scikit_learns_with_ties() -> None:
    rng = np.random.default_rng(0)
    scores = np.round(rng.random(500), 1)  # many ties
    labels = (rng.random(500) < scores).astype(float)
    assert abs(auc(scores, labels) - roc_auc_score(labels, scores)) < 1e-12
    assert auc(scores, np.zeros(500)) is None


def test_a_profile_bins_a_discrete_column_per_value_and_skips_identifiers() -> None:
    column = profile_column("flag", np.array([0.0, 1.0, 1.0, np.nan]))
    assert not isinstance(column, str)
    assert column.edges == (0.0, 1.0) and column.counts == (0, 1, 2) and column.nan == 1
    assert column.bin_counts(np.array([1.0, 2.0, np.nan])).tolist() == [0, 0, 2, 1, 1]
    ids = np.array([f"u{i}".encode() for i in range(100)], dtype=object)
    assert profile_column("user_id", ids) == "100 distinct values (an identifier?)"


def test_drift_counts_merge_minute_by_minute() -> None:
    part = {"graph": "g", "version": "1", "columns": ["x"], "now": 10, "requests": 2, "dropped": 1}
    a = {**part, "minutes": {"9": [1, 2, 0, 0], "10": [3, 0, 0, 0]}, "total": [4, 2, 0, 0]}
    b = {**part, "minutes": {"10": [0, 5, 1, 0]}, "total": [0, 5, 1, 0], "now": 11}
    (merged,) = merge_drift([a, b])
    assert merged.total.tolist() == [4, 7, 1, 0] and merged.requests == 4 and merged.dropped == 2
    assert merged.window(1).tolist() == [0, 0, 0, 0]  # now is 11: minute 10 is outside a 1-minute window
    assert merged.window(5).tolist() == [4, 7, 1, 0]


def test_a_label_counts_once_when_two_workers_served_its_id() -> None:
    worker0 = {"matched": [0, 2], "duplicate": [], "late": [3]}
    worker1 = {"matched": [2], "duplicate": [1], "late": []}  # id 2 was also served here (a retry)
    assert merge_feedback([worker0, worker1], labels=5) == {
        "matched": 2, "duplicate": 1, "late": 1, "unknown": 1, "invalid": 0,
    }  # fmt: skip
