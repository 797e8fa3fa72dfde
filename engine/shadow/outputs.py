"""Per-output comparators: fold one request's live and shadow arrays into running statistics.

Each ``observe(live, shadow)`` is vectorised over the rows (axis 0) and returns how
many rows were compared and how many agree. A row is everything after axis 0
(a scalar output is one row of one element). Semantics in ``docs/shadows.md``.

``state()`` is a comparator's running numbers as JSON-able plain data and ``absorb(state)``
adds another comparator's (same rule) to this one: how ``--workers N`` reports one set of
shadow numbers. Counts, histograms and confusion matrices add exactly; a score comparator's
Spearman window takes the newest rows of both rings, up to its window.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from engine.shadow.histogram import LogHistogram
from engine.shadow.report import Confusion, OutputReport, Spread
from engine.shadow.rules import CompareKind, CompareRule

OTHER = "(other)"
_TINY = float(np.finfo(np.float64).smallest_subnormal)
SMALL = 16  # up to this many rows, plain Python beats numpy's per-call overhead


class Incomparable(ValueError):
    """Live and shadow arrays whose shapes or types cannot be compared row by row."""


def _rows(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    return a.reshape(1, -1) if a.ndim == 0 else a.reshape(a.shape[0], -1)


def _pair(live: np.ndarray, shadow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lv, s = _rows(live), _rows(shadow)
    if lv.shape != s.shape:
        raise Incomparable(f"live shape {np.shape(live)} vs shadow shape {np.shape(shadow)}")
    return lv, s


def spread(h: LogHistogram) -> Spread:
    return Spread(mean=h.mean(), p50=h.quantile(0.5), p99=h.quantile(0.99), max=h.max if h.n else None)


class NumericComparator:
    """Absolute and relative differences, per row the largest over the row's elements."""

    def __init__(self, rule: CompareRule) -> None:
        self.rule = rule
        self.rows = 0
        self.agree = 0
        self.nonfinite = 0
        self.abs = LogHistogram()
        self.rel = LogHistogram()

    def observe(self, live: np.ndarray, shadow: np.ndarray) -> tuple[int, int]:
        lv, s = _pair(live, shadow)
        try:
            lv, s = lv.astype(np.float64, copy=False), s.astype(np.float64, copy=False)
        except (TypeError, ValueError) as exc:
            raise Incomparable(f"not numeric: {exc}") from None
        n, width = lv.shape
        if width == 0:  # rows without elements agree trivially
            self.rows += n
            self.agree += n
            return n, n
        with np.errstate(all="ignore"):
            diff = np.abs(s - lv)
            finite = bool(np.isfinite(diff).all())
            if not finite:  # equal infinities and NaN on both sides differ by 0
                diff[(lv == s) | (np.isnan(lv) & np.isnan(s))] = 0.0
            scale = np.fmax(np.abs(lv), np.abs(s))
            rel = diff / np.fmax(scale, _TINY)  # 0 where both are 0
            tol = (
                np.fmax(self.rule.abs_tol, self.rule.rel_tol * scale)
                if self.rule.rel_tol
                else self.rule.abs_tol
            )
            within = diff <= tol
        if width == 1:
            row_abs, row_rel, row_within = diff[:, 0], rel[:, 0], within[:, 0]
        else:
            row_abs, row_rel, row_within = diff.max(axis=1), rel.max(axis=1), within.all(axis=1)
        if not finite:
            keep = np.isfinite(row_abs) & np.isfinite(row_rel)
            row_abs, row_rel, row_within = row_abs[keep], row_rel[keep], row_within[keep]
            self.nonfinite += n - row_abs.size
        self.abs.add(row_abs)
        self.rel.add(row_rel)
        agree = int(np.count_nonzero(row_within))
        self.rows += n
        self.agree += agree
        return n, agree

    def state(self) -> dict[str, Any]:
        return {
            "rows": self.rows, "agree": self.agree, "nonfinite": self.nonfinite,
            "abs": self.abs.state(), "rel": self.rel.state(),
        }  # fmt: skip

    def absorb(self, state: Mapping[str, Any]) -> None:
        self.rows += int(state["rows"])
        self.agree += int(state["agree"])
        self.nonfinite += int(state["nonfinite"])
        self.abs.absorb_state(state["abs"])
        self.rel.absorb_state(state["rel"])

    def report(self, missing: int, mismatched: int) -> OutputReport:
        return OutputReport(
            kind=self.rule.kind.value, rule=self.rule.to_json(), rows=self.rows, agree=self.agree,
            missing=missing, mismatched=mismatched, nonfinite=self.nonfinite,
            abs_diff=spread(self.abs), rel_diff=spread(self.rel),
        )  # fmt: skip


class ScoreComparator(NumericComparator):
    """Numeric, plus Spearman rank correlation of one column over a ring of the last ``window`` rows."""

    def __init__(self, rule: CompareRule) -> None:
        super().__init__(rule)
        self._live = np.zeros(rule.window)
        self._shadow = np.zeros(rule.window)
        self._filled = 0
        self._next = 0

    def observe(self, live: np.ndarray, shadow: np.ndarray) -> tuple[int, int]:
        lv, s = _pair(live, shadow)
        if not -lv.shape[1] <= self.rule.column < lv.shape[1]:
            raise Incomparable(f"score column {self.rule.column} is outside rows of {lv.shape[1]} elements")
        result = super().observe(live, shadow)
        lc, sc = lv[:, self.rule.column].astype(np.float64), s[:, self.rule.column].astype(np.float64)
        window = self.rule.window
        if lc.size <= SMALL:
            for a, b in zip(lc.tolist(), sc.tolist(), strict=True):
                if math.isfinite(a) and math.isfinite(b):
                    self._live[self._next], self._shadow[self._next] = a, b
                    self._next = (self._next + 1) % window
                    self._filled = min(window, self._filled + 1)
            return result
        keep = np.isfinite(lc) & np.isfinite(sc)
        lc, sc = lc[keep][-window:], sc[keep][-window:]
        at = (self._next + np.arange(lc.size)) % window
        self._live[at], self._shadow[at] = lc, sc
        self._next = (self._next + lc.size) % window
        self._filled = min(window, self._filled + lc.size)
        return result

    def _window(self) -> tuple[np.ndarray, np.ndarray]:
        """The ring's rows, oldest first."""
        if self._filled < self.rule.window:
            return self._live[: self._filled], self._shadow[: self._filled]
        order = (self._next + np.arange(self.rule.window)) % self.rule.window
        return self._live[order], self._shadow[order]

    def state(self) -> dict[str, Any]:
        live, shadow = self._window()
        return {**super().state(), "window_live": live.tolist(), "window_shadow": shadow.tolist()}

    def absorb(self, state: Mapping[str, Any]) -> None:
        super().absorb(state)
        live, shadow = self._window()
        live = np.concatenate([live, np.asarray(state["window_live"], dtype=np.float64)])[-self.rule.window :]
        shadow = np.concatenate([shadow, np.asarray(state["window_shadow"], dtype=np.float64)])
        shadow = shadow[-self.rule.window :]
        if live.shape != shadow.shape:
            raise ValueError("score window of unequal live and shadow rows")
        self._filled = live.size
        self._live[: live.size], self._shadow[: shadow.size] = live, shadow
        self._next = live.size % self.rule.window

    def spearman(self) -> float | None:
        if self._filled < 2:
            return None
        a, b = _ranks(self._live[: self._filled]), _ranks(self._shadow[: self._filled])
        a, b = a - a.mean(), b - b.mean()
        denominator = float(np.sqrt((a * a).sum() * (b * b).sum()))
        return float((a * b).sum()) / denominator if denominator > 0 else None

    def report(self, missing: int, mismatched: int) -> OutputReport:
        base = super().report(missing, mismatched)
        return dataclasses.replace(base, spearman=self.spearman(), window_rows=self._filled)


def _ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their average rank."""
    order = np.argsort(x, kind="stable")
    ordered = x[order]
    starts_group = np.r_[True, ordered[1:] != ordered[:-1]]
    group = np.cumsum(starts_group) - 1
    starts = np.flatnonzero(starts_group)
    ends = np.r_[starts[1:], x.size]
    ranks = np.empty(x.size)
    ranks[order] = ((starts + ends - 1) / 2.0 + 1.0)[group]
    return ranks


class ClassComparator:
    """Agreement and a confusion matrix over at most ``max_classes`` labels plus ``(other)``."""

    def __init__(self, rule: CompareRule) -> None:
        self.rule = rule
        self.rows = 0
        self.agree = 0
        self._labels: dict[str, int] = {}
        self._codes: dict[tuple[type, object], int] = {}  # (type, value) -> matrix index
        self._matrix = np.zeros((rule.max_classes + 1, rule.max_classes + 1), dtype=np.int64)

    def observe(self, live: np.ndarray, shadow: np.ndarray) -> tuple[int, int]:
        lv, s = _pair(live, shadow)
        lc, sc = _classes(lv), _classes(s)
        n = lc.size
        if n > SMALL:
            try:
                agree = int(np.count_nonzero(np.asarray(lc == sc, dtype=bool)))
                np.add.at(self._matrix, (self._indices(lc), self._indices(sc)), 1)
            except TypeError:  # values numpy cannot sort or compare: the row-by-row path below
                pass
            else:
                self.rows += n
                self.agree += agree
                return n, agree
        agree = 0
        for a, b in zip(lc.tolist(), sc.tolist(), strict=True):
            agree += a == b
            self._matrix[self._code(a), self._code(b)] += 1
        self.rows += n
        self.agree += agree
        return n, agree

    def _indices(self, classes: np.ndarray) -> np.ndarray:
        values, inverse = np.unique(classes, return_inverse=True)
        codes = np.array([self._code(v) for v in values.tolist()], dtype=np.int64)
        return codes[inverse.reshape(-1)]

    def _code(self, value: object) -> int:
        key = (type(value), value)
        code = self._codes.get(key)
        if code is None:
            label = _label(value)
            code = self._labels.get(label)
            if code is None:
                code = min(len(self._labels), self.rule.max_classes)
                if code < self.rule.max_classes:
                    self._labels[label] = code
            self._codes[key] = code
        return code

    def state(self) -> dict[str, Any]:
        labels = [OTHER] * (self.rule.max_classes + 1)
        for label, code in self._labels.items():
            labels[code] = label
        rows, columns = np.nonzero(self._matrix)
        return {
            "rows": self.rows,
            "agree": self.agree,
            "cells": [
                [labels[r], labels[c], int(self._matrix[r, c])]
                for r, c in zip(rows.tolist(), columns.tolist(), strict=True)
            ],
        }

    def absorb(self, state: Mapping[str, Any]) -> None:
        """Add another comparator's counts, cell by cell, by label (its codes are its own)."""
        self.rows += int(state["rows"])
        self.agree += int(state["agree"])
        for live, shadow, n in state["cells"]:
            self._matrix[self._label_code(str(live)), self._label_code(str(shadow))] += int(n)

    def _label_code(self, label: str) -> int:
        if label == OTHER and label not in self._labels:
            return self.rule.max_classes
        code = self._labels.get(label)
        if code is None:
            code = min(len(self._labels), self.rule.max_classes)
            if code < self.rule.max_classes:
                self._labels[label] = code
        return code

    def report(self, missing: int, mismatched: int) -> OutputReport:
        other = self.rule.max_classes  # the row and column of every label past max_classes
        ordered = sorted(self._labels.items(), key=lambda item: _label_order(item[0]))
        labels = [label for label, _ in ordered]
        keep = [code for _, code in ordered]
        m = self._matrix
        if m[other, :].any() or m[:, other].any():
            keep.append(other)
            labels.append(OTHER)
        counts = m[np.ix_(keep, keep)].tolist()
        return OutputReport(
            kind=CompareKind.CLASS.value, rule=self.rule.to_json(), rows=self.rows, agree=self.agree,
            missing=missing, mismatched=mismatched, confusion=Confusion(labels=labels, counts=counts),
        )  # fmt: skip


def _classes(rows: np.ndarray) -> np.ndarray:
    """One class per row: the element, the argmax of a float vector, or the whole row as text."""
    if rows.shape[1] == 1:
        return rows[:, 0]
    if rows.dtype.kind == "f":
        return np.asarray(rows.argmax(axis=1))
    return np.array([" ".join(_label(v) for v in row) for row in rows], dtype=object)


def _label_order(label: str) -> tuple[int, float, str]:
    """Numbers in numeric order first, then text."""
    try:
        return (0, float(label), label)
    except ValueError:
        return (1, 0.0, label)


def _label(value: object) -> str:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="backslashreplace")
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


Comparator = NumericComparator | ClassComparator


def comparator(rule: CompareRule) -> Comparator:
    if rule.kind is CompareKind.CLASS:
        return ClassComparator(rule)
    if rule.kind is CompareKind.SCORE:
        return ScoreComparator(rule)
    return NumericComparator(rule)
