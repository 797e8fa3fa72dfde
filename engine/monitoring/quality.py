"""Label feedback and live model quality: ground truth joined to earlier predictions by request id.

A graph opts in with ``quality: {output: score, threshold: 0.5}`` (``kind: regression`` for a
numeric target). Each served version keeps a ``QualityWindow``: the quality output of its most
recent requests by request id (``MAX_PREDICTIONS`` rows; older ones are evicted, and their ids
remembered a while longer so a label for them counts as ``late``, not ``unknown``). A label
(``Feedback`` RPC, ``engine feedback load``) is broadcast to every worker; the worker that served
the request joins it and keeps the (prediction, label) pair (the newest ``MAX_PAIRS``), so quality
is exact over the joined pairs, and pairs merge across workers by concatenation.

    binary      AUC (Mann-Whitney, ties count half), log-loss, accuracy / precision / recall at the
                threshold (score >= threshold is positive), expected calibration error (10 bins)
    regression  MAE, RMSE
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

MAX_PREDICTIONS = 100_000
"""Predictions (rows) a version keeps waiting for their label, per worker."""
MAX_LATE_IDS = 100_000
"""Evicted prediction ids remembered, so their labels count as late."""
MAX_PAIRS = 100_000
"""Joined (prediction, label) pairs kept per version and worker; quality is over these."""
CALIBRATION_BINS = 10
LOG_EPS = 1e-15
BINARY = "binary"
REGRESSION = "regression"
OUTCOMES = ("matched", "duplicate", "late", "unknown", "invalid")


@dataclass(frozen=True, slots=True)
class QualityConfig:
    """``quality:`` of a graph: which served output is the prediction, and how it is read."""

    output: str
    output_index: int  # in the runner's outputs
    kind: str = BINARY
    threshold: float = 0.5


@dataclass(slots=True)
class QualityWindow:
    """One served version's predictions awaiting labels, and the pairs joined so far."""

    graph: str
    version: str
    config: QualityConfig
    predictions: OrderedDict[tuple[str, int], float] = field(default_factory=OrderedDict)
    late_ids: OrderedDict[tuple[str, int], None] = field(default_factory=OrderedDict)
    labelled: OrderedDict[tuple[str, int], None] = field(default_factory=OrderedDict)
    scores: list[float] = field(default_factory=list)
    labels: list[float] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    unlabelled_ids: int = 0  # requests without a request id: nothing to join a label to

    def remember(self, request_id: str, prediction: np.ndarray) -> None:
        """One request's quality output (on the response path: a few dict inserts)."""
        if not request_id:
            self.unlabelled_ids += 1
            return
        flat = prediction.reshape(prediction.shape[0], -1)[:, 0] if prediction.ndim else prediction.reshape(1)
        for row, value in enumerate(flat.tolist()):
            self.predictions[(request_id, row)] = float(value)
        while len(self.predictions) > MAX_PREDICTIONS:
            old, _ = self.predictions.popitem(last=False)
            self.late_ids[old] = None
            if len(self.late_ids) > MAX_LATE_IDS:
                self.late_ids.popitem(last=False)

    def join(self, request_id: str, row: int, label: float) -> str:
        """Attach one label; returns matched, duplicate, late, or "" (not served here)."""
        key = (request_id, row)
        if key in self.labelled:
            return "duplicate"
        score = self.predictions.pop(key, None)
        if score is None:
            return "late" if key in self.late_ids else ""
        self.labelled[key] = None
        if len(self.labelled) > MAX_PAIRS:
            self.labelled.popitem(last=False)
        self.scores.append(score)
        self.labels.append(label)
        if len(self.scores) > MAX_PAIRS:
            del self.scores[: len(self.scores) - MAX_PAIRS]
            del self.labels[: len(self.labels) - MAX_PAIRS]
        return "matched"

    def state(self) -> dict[str, Any]:
        return {
            "graph": self.graph,
            "version": self.version,
            "output": self.config.output,
            "kind": self.config.kind,
            "threshold": self.config.threshold,
            "scores": list(self.scores),
            "labels": list(self.labels),
            "counts": dict(self.counts),
            "waiting": len(self.predictions),
            "unlabelled_ids": self.unlabelled_ids,
        }


def join_labels(windows: Sequence[QualityWindow], labels: Iterable[tuple[str, int, float]]) -> dict[str, int]:
    """Join labels to whichever of one graph's versions served them; counts by outcome (ids no
    version here served are ``unknown`` to this worker: another may have served them)."""
    counts = dict.fromkeys(OUTCOMES, 0)
    for request_id, row, label in labels:
        if not math.isfinite(label):
            counts["invalid"] += 1
            continue
        outcome = ""
        for window in windows:
            outcome = window.join(request_id, row, label)
            if outcome:
                window.counts[outcome] += 1
                break
        counts[outcome or "unknown"] += 1
    return counts


@dataclass(frozen=True, slots=True)
class Quality:
    """One version's live quality over its joined pairs (merged over workers)."""

    graph: str
    version: str
    output: str
    kind: str
    threshold: float
    pairs: int
    waiting: int  # predictions still waiting for a label
    counts: Mapping[str, int]  # labels by outcome
    metrics: Mapping[str, float | None]

    def to_dict(self) -> dict[str, Any]:
        return {
            "graph": self.graph,
            "version": self.version,
            "output": self.output,
            "kind": self.kind,
            "threshold": self.threshold,
            "pairs": self.pairs,
            "waiting": self.waiting,
            "labels": dict(self.counts),
            **dict(self.metrics),
        }


def merge_quality(parts: Iterable[Mapping[str, Any]]) -> list[Quality]:
    """Every worker's ``QualityWindow.state`` by (graph, version): pairs concatenated, counts summed."""
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for part in parts:
        key = (str(part["graph"]), str(part["version"]))
        into = merged.setdefault(
            key,
            {"part": part, "scores": [], "labels": [], "counts": dict.fromkeys(OUTCOMES, 0), "waiting": 0},
        )
        into["scores"].extend(part["scores"])
        into["labels"].extend(part["labels"])
        into["waiting"] += int(part["waiting"])
        for outcome, count in part["counts"].items():
            into["counts"][outcome] = into["counts"].get(outcome, 0) + int(count)
    out = []
    for (graph, version), v in sorted(merged.items()):
        first = v["part"]
        scores, labels = np.asarray(v["scores"], dtype=np.float64), np.asarray(v["labels"], dtype=np.float64)
        kind, threshold = str(first["kind"]), float(first["threshold"])
        metrics = (
            binary_metrics(scores, labels, threshold)
            if kind == BINARY
            else regression_metrics(scores, labels)
        )
        out.append(
            Quality(
                graph,
                version,
                str(first["output"]),
                kind,
                threshold,
                len(scores),
                v["waiting"],
                v["counts"],
                metrics,
            )
        )
    return out


def auc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """Area under the ROC curve: the chance a random positive scores above a random negative
    (ties count half); None without both classes."""
    positive = labels > 0.5
    n_pos = int(np.count_nonzero(positive))
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    # average ranks over ties (1-based)
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    ends = np.r_[starts[1:], len(scores)]
    average = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(average, ends - starts)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def binary_metrics(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, float | None]:
    if not len(scores):
        return dict.fromkeys(("auc", "log_loss", "accuracy", "precision", "recall", "calibration_error"))
    y = labels > 0.5
    p = np.clip(scores, LOG_EPS, 1 - LOG_EPS)
    log_loss = float(-np.mean(np.where(y, np.log(p), np.log(1 - p))))
    predicted = scores >= threshold
    tp = int(np.count_nonzero(predicted & y))
    fp = int(np.count_nonzero(predicted & ~y))
    fn = int(np.count_nonzero(~predicted & y))
    edges = np.linspace(0.0, 1.0, CALIBRATION_BINS + 1)
    which = np.clip(np.searchsorted(edges, scores, side="right") - 1, 0, CALIBRATION_BINS - 1)
    ece = 0.0
    for b in range(CALIBRATION_BINS):
        inside = which == b
        if inside.any():
            ece += float(inside.mean()) * abs(float(scores[inside].mean()) - float(y[inside].mean()))
    return {
        "auc": auc(scores, labels),
        "log_loss": log_loss,
        "accuracy": float(np.mean(predicted == y)),
        "precision": tp / (tp + fp) if tp + fp else None,
        "recall": tp / (tp + fn) if tp + fn else None,
        "calibration_error": ece,
    }


def regression_metrics(predictions: np.ndarray, targets: np.ndarray) -> dict[str, float | None]:
    if not len(predictions):
        return {"mae": None, "rmse": None}
    error = predictions - targets
    return {"mae": float(np.mean(np.abs(error))), "rmse": float(math.sqrt(float(np.mean(error**2))))}
