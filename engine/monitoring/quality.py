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
    # shadow -> (request id, row) -> (candidate's value, its live target's value) awaiting a label
    shadow_predictions: dict[str, OrderedDict[tuple[str, int], tuple[float, float | None]]] = field(
        default_factory=dict
    )
    shadow_pairs: dict[str, list[tuple[float, float | None, float]]] = field(default_factory=dict)
    shadow_targets: dict[str, str] = field(default_factory=dict)  # shadow -> its target node ("" graph)
    shadow_unaligned: int = 0  # outcomes whose rows are not the request's (a branch's share of them)
    arm_of: dict[tuple[str, int], str] = field(default_factory=dict)  # awaiting a label: "split=arm"
    arm_pairs: dict[str, list[tuple[float, float]]] = field(default_factory=dict)

    def on_shadow(self, request_id: str, rows: int, outcome: Any) -> None:
        """A shadow's outcome for one request (``engine.shadow.ShadowOutcome``, told as it settles):
        its first compared output (the quality output for a whole-graph shadow), row by row.
        Only outcomes covering the request's rows are kept (a node shadow behind a switch sees
        its branch's rows only; with one-row requests that is the request)."""
        if outcome.status != "ok" or not outcome.outputs or not request_id:
            return
        names = list(outcome.rules) or list(outcome.outputs)
        name = self.config.output if self.config.output in outcome.outputs else names[0]
        candidate = outcome.outputs.get(name)
        if candidate is None or not candidate.ndim or candidate.shape[0] != rows:
            self.shadow_unaligned += 1
            return
        live = outcome.live.get(name)
        cand = candidate.reshape(rows, -1)[:, 0].tolist()
        target = (
            live.reshape(rows, -1)[:, 0].tolist() if live is not None and live.shape[:1] == (rows,) else None
        )
        waiting = self.shadow_predictions.setdefault(outcome.shadow, OrderedDict())
        self.shadow_targets[outcome.shadow] = outcome.target
        for row in range(rows):
            waiting[(request_id, row)] = (float(cand[row]), None if target is None else float(target[row]))
        while len(waiting) > MAX_PREDICTIONS:
            waiting.popitem(last=False)

    def remember(
        self,
        request_id: str,
        prediction: np.ndarray,
        arms: Mapping[str, tuple[np.ndarray, tuple[str, ...]]] | None = None,
    ) -> None:
        """One request's quality output (on the response path: a few dict inserts); ``arms``: each
        split's per-row branch index and labels, so quality is also kept per arm."""
        if not request_id:
            self.unlabelled_ids += 1
            return
        flat = prediction.reshape(prediction.shape[0], -1)[:, 0] if prediction.ndim else prediction.reshape(1)
        names = _arm_names(arms, len(flat)) if arms else None
        for row, value in enumerate(flat.tolist()):
            self.predictions[(request_id, row)] = float(value)
            if names is not None:
                self.arm_of[(request_id, row)] = names[row]
        while len(self.predictions) > MAX_PREDICTIONS:
            old, _ = self.predictions.popitem(last=False)
            self.arm_of.pop(old, None)
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
        arm = self.arm_of.pop(key, None)
        if arm is not None:
            arm_pairs = self.arm_pairs.setdefault(arm, [])
            arm_pairs.append((score, label))
            if len(arm_pairs) > MAX_PAIRS:
                del arm_pairs[: len(arm_pairs) - MAX_PAIRS]
        for shadow, waiting in self.shadow_predictions.items():
            found = waiting.pop(key, None)
            if found is not None:
                pairs = self.shadow_pairs.setdefault(shadow, [])
                pairs.append((found[0], found[1], label))
                if len(pairs) > MAX_PAIRS:
                    del pairs[: len(pairs) - MAX_PAIRS]
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
            "arms": {arm: [list(p) for p in pairs] for arm, pairs in list(self.arm_pairs.items())},
            "shadows": {
                shadow: {"target": self.shadow_targets.get(shadow, ""), "pairs": [list(p) for p in pairs]}
                for shadow, pairs in list(self.shadow_pairs.items())
            },
        }


def _arm_names(arms: Mapping[str, tuple[np.ndarray, tuple[str, ...]]], rows: int) -> list[str]:
    """``split=arm`` per row (several splits: joined with ``,``)."""
    per_split = []
    for split, (assignment, labels) in sorted(arms.items()):
        if assignment.shape[0] != rows:
            continue
        per_split.append([f"{split}={labels[int(i)]}" for i in assignment.tolist()])
    return [",".join(parts) for parts in zip(*per_split, strict=True)] if per_split else [""] * rows


def join_labels(
    windows: Sequence[QualityWindow], labels: Iterable[tuple[str, int, float]]
) -> dict[str, list[int]]:
    """Join labels to whichever of one graph's versions served them here. Returns the positions of
    the labels by outcome (matched, duplicate, late); the rest this worker never served (another
    may have: ``merge_feedback`` decides)."""
    found: dict[str, list[int]] = {"matched": [], "duplicate": [], "late": []}
    for position, (request_id, row, label) in enumerate(labels):
        if not math.isfinite(label):
            continue
        for window in windows:
            outcome = window.join(request_id, row, label)
            if outcome:
                window.counts[outcome] += 1
                found[outcome].append(position)
                break
    return found


def merge_feedback(parts: Iterable[Mapping[str, Sequence[int]]], labels: int) -> dict[str, int]:
    """One outcome per label over the workers' answers: matched if any worker matched it (a request
    id served twice, e.g. a client retry on another worker, joins both predictions but counts as one
    label), else duplicate, else late, else unknown."""
    answers = list(parts)
    status: dict[int, str] = {}
    for outcome in ("late", "duplicate", "matched"):  # later ones win
        for part in answers:
            for position in part.get(outcome, ()):
                status[int(position)] = outcome
    counts = dict.fromkeys(OUTCOMES, 0)
    for outcome in status.values():
        counts[outcome] += 1
    counts["unknown"] = labels - len(status)
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
    shadows: Mapping[str, ShadowQuality] = field(default_factory=dict)
    arms: Mapping[str, tuple[int, Mapping[str, float | None]]] = field(
        default_factory=dict
    )  # arm -> pairs, metrics

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
            "shadows": {name: q.to_dict() for name, q in sorted(self.shadows.items())},
            "arms": {arm: {"pairs": n, **dict(m)} for arm, (n, m) in sorted(self.arms.items())},
        }


@dataclass(frozen=True, slots=True)
class ShadowQuality:
    """A shadow candidate's quality on the labelled rows it ran, beside its live target's on the
    same rows (for a node shadow the target node's output; for a whole graph, the live graph's)."""

    target: str
    pairs: int
    candidate: Mapping[str, float | None]
    live: Mapping[str, float | None]

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "pairs": self.pairs,
            "candidate": dict(self.candidate),
            "live": dict(self.live),
        }


def merge_quality(parts: Iterable[Mapping[str, Any]]) -> list[Quality]:
    """Every worker's ``QualityWindow.state`` by (graph, version): pairs concatenated, counts summed."""
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for part in parts:
        key = (str(part["graph"]), str(part["version"]))
        into = merged.setdefault(
            key,
            {
                "part": part,
                "scores": [],
                "labels": [],
                "counts": dict.fromkeys(OUTCOMES, 0),
                "waiting": 0,
                "shadows": {},
                "arms": {},
            },
        )
        for arm, pairs in part.get("arms", {}).items():
            into["arms"].setdefault(arm, []).extend(pairs)
        for shadow, got in part.get("shadows", {}).items():
            entry = into["shadows"].setdefault(shadow, {"target": got["target"], "pairs": []})
            entry["pairs"].extend(got["pairs"])
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
        metrics = _metrics(kind, scores, labels, threshold)
        shadows = {name: _shadow_quality(kind, threshold, got) for name, got in v["shadows"].items()}
        arms = {arm: _arm_quality(kind, threshold, pairs) for arm, pairs in v["arms"].items() if arm}
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
                shadows,
                arms,
            )
        )
    return out


def _metrics(kind: str, scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, float | None]:
    return binary_metrics(scores, labels, threshold) if kind == BINARY else regression_metrics(scores, labels)


def _arm_quality(
    kind: str, threshold: float, pairs: Sequence[Sequence[float]]
) -> tuple[int, dict[str, float | None]]:
    scores = np.asarray([p[0] for p in pairs], dtype=np.float64)
    labels = np.asarray([p[1] for p in pairs], dtype=np.float64)
    return len(pairs), _metrics(kind, scores, labels, threshold)


def _shadow_quality(kind: str, threshold: float, got: Mapping[str, Any]) -> ShadowQuality:
    pairs = got["pairs"]
    candidate = np.asarray([p[0] for p in pairs], dtype=np.float64)
    labels = np.asarray([p[2] for p in pairs], dtype=np.float64)
    with_live = [p for p in pairs if p[1] is not None]
    live = np.asarray([p[1] for p in with_live], dtype=np.float64)
    live_labels = np.asarray([p[2] for p in with_live], dtype=np.float64)
    return ShadowQuality(
        str(got["target"]),
        len(pairs),
        _metrics(kind, candidate, labels, threshold),
        _metrics(kind, live, live_labels, threshold),
    )


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
