"""Online drift: live values counted on a reference profile's bins, over rolling windows.

One ``VersionDrift`` per served graph version that has a ``profile.json``. Per request the core
hands it the plan's slots (``tap``): it keeps references to the few arrays it monitors and the
current minute in a bounded queue (no copy, no counting: a tuple and an append). ``count`` (a
background task of the server, every ``COUNT_INTERVAL_S``) concatenates what is queued per
column and counts it on the reference bins with numpy, into a ring of one-minute buckets; a
full queue drops the request from drift and counts it (``dropped``), it never slows serving.

Windows (``5m``, ``1h``) sum the minutes they cover. ``state`` is plain JSON (per-minute counts,
exact to merge across ``--workers``: ``merge_drift`` adds them), and ``drift_rows`` turns counts
into numbers per column and window:

    psi                  sum((live - ref) * ln(live / ref)) over the bins' shares (each share
                         floored at ``EPSILON``); < 0.1 stable, 0.1-0.25 moderate, > 0.25 shifted
    js_distance          sqrt of the Jensen-Shannon divergence (base 2): 0 same, 1 disjoint
    nan_share            NaN (or empty text) values / values
    out_of_range_share   values outside the reference's [min, max] (or not among its values)
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.monitoring.layout import TapColumn
from engine.monitoring.profile import ColumnProfile, Profile

WINDOWS: tuple[tuple[str, int], ...] = (("5m", 5), ("1h", 60))
"""Window label and its length in minutes; the ring keeps the longest."""
RING_MINUTES = 60
MAX_PENDING = 4096
"""Requests waiting to be counted; beyond, a request is left out of drift and counted as dropped."""
COUNT_INTERVAL_S = 0.25
EPSILON = 1e-4


def _minute() -> int:
    return int(time.time()) // 60


class VersionDrift:
    """Live counts of one graph version's monitored columns (see the module docstring)."""

    def __init__(
        self,
        graph: str,
        version: str,
        profile: Profile,
        columns: Sequence[TapColumn],
        clock: Callable[[], int] = _minute,
    ) -> None:
        self.graph, self.version, self.profile = graph, version, profile
        wanted = {c.name: c for c in columns}
        self.columns: list[tuple[TapColumn, ColumnProfile]] = [
            (wanted[p.name], p) for p in profile.columns if p.name in wanted
        ]
        self.unmatched = [p.name for p in profile.columns if p.name not in wanted]
        self.slots = tuple(sorted({tap.slot for tap, _ in self.columns}))
        where = {slot: k for k, slot in enumerate(self.slots)}
        self._where = [where[tap.slot] for tap, _ in self.columns]
        self.offsets: list[int] = []
        width = 0
        for _, ref in self.columns:
            self.offsets.append(width)
            width += ref.bins + 2
        self.width = width
        self.ring = np.zeros((RING_MINUTES, width), dtype=np.int64)
        self.ring_minute = np.full(RING_MINUTES, -1, dtype=np.int64)
        self.total = np.zeros(width, dtype=np.int64)
        self.pending: deque[tuple[int, tuple[np.ndarray | None, ...]]] = deque()
        self.dropped = 0
        self.requests = 0
        self._clock = clock

    def tap(self, values: Sequence[np.ndarray | None]) -> None:
        """One request's slots (on the response path: a tuple and an append)."""
        if len(self.pending) >= MAX_PENDING:
            self.dropped += 1
            return
        self.pending.append((self._clock(), tuple(values[s] for s in self.slots)))

    def count(self) -> int:
        """Count every queued request on the reference bins; returns how many were counted."""
        if not self.pending:
            return 0
        taken: dict[int, list[tuple[np.ndarray | None, ...]]] = {}
        n = 0
        while self.pending:
            minute, arrays = self.pending.popleft()
            taken.setdefault(minute, []).append(arrays)
            n += 1
        for minute, batch in taken.items():
            self._add(minute, batch)
        self.requests += n
        return n

    def _add(self, minute: int, batch: list[tuple[np.ndarray | None, ...]]) -> None:
        counts = np.zeros(self.width, dtype=np.int64)
        for k, ((tap, ref), where) in enumerate(zip(self.columns, self._where, strict=True)):
            parts = [_column(a, tap.index) for arrays in batch if (a := arrays[where]) is not None]
            if not parts:
                continue
            values = parts[0] if len(parts) == 1 else np.concatenate(parts)
            start = self.offsets[k]
            counts[start : start + ref.bins + 2] = ref.bin_counts(values)
        self._into(minute, counts)

    def _into(self, minute: int, counts: np.ndarray) -> None:
        row = minute % RING_MINUTES
        if self.ring_minute[row] != minute:
            if self.ring_minute[row] > minute:  # older than the ring: only the total keeps it
                self.total += counts
                return
            self.ring[row] = 0
            self.ring_minute[row] = minute
        self.ring[row] += counts
        self.total += counts

    def window(self, minutes: int, now: int | None = None) -> np.ndarray:
        """Counts over the last ``minutes`` minutes (the current one included)."""
        now = self._clock() if now is None else now
        use = (self.ring_minute > now - minutes) & (self.ring_minute <= now)
        return np.asarray(self.ring[use].sum(axis=0), dtype=np.int64)

    def state(self) -> dict[str, Any]:
        """Plain JSON: the minutes in the ring and the total, exact to merge across workers."""
        now = self._clock()
        minutes = {
            str(int(m)): self.ring[i].tolist()
            for i, m in enumerate(self.ring_minute)
            if m >= 0 and m > now - RING_MINUTES
        }
        return {
            "graph": self.graph,
            "version": self.version,
            "columns": [ref.name for _, ref in self.columns],
            "created": self.profile.created,
            "now": now,
            "minutes": minutes,
            "total": self.total.tolist(),
            "requests": self.requests,
            "dropped": self.dropped,
        }


def _column(array: np.ndarray, index: int | None) -> np.ndarray:
    rows = array.reshape(array.shape[0], -1) if array.ndim else array.reshape(1, 1)
    return rows.reshape(-1) if index is None else rows[:, index]


@dataclass(frozen=True, slots=True)
class DriftState:
    """One graph version's live counts, merged over workers (``merge_drift``)."""

    graph: str
    version: str
    columns: tuple[str, ...]
    now: int
    minutes: Mapping[int, np.ndarray]
    total: np.ndarray
    requests: int
    dropped: int

    def window(self, minutes: int | None) -> np.ndarray:
        if minutes is None:
            return self.total
        rows = [c for m, c in self.minutes.items() if self.now - minutes < m <= self.now]
        return np.sum(rows, axis=0) if rows else np.zeros_like(self.total)


def merge_drift(parts: Iterable[Mapping[str, Any]]) -> list[DriftState]:
    """Every worker's ``VersionDrift.state`` summed by (graph, version): minute by minute."""
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for part in parts:
        key = (str(part["graph"]), str(part["version"]))
        total = np.asarray(part["total"], dtype=np.int64)
        into = merged.get(key)
        if into is None:
            merged[key] = into = {
                "columns": tuple(part["columns"]),
                "now": int(part["now"]),
                "minutes": {},
                "total": np.zeros_like(total),
                "requests": 0,
                "dropped": 0,
            }
        if tuple(part["columns"]) != into["columns"]:
            raise ValueError(f"workers monitor different columns of {key[0]} {key[1]}")
        into["now"] = max(into["now"], int(part["now"]))
        into["total"] = into["total"] + total
        for minute, counts in part["minutes"].items():
            m = int(minute)
            add = np.asarray(counts, dtype=np.int64)
            into["minutes"][m] = into["minutes"][m] + add if m in into["minutes"] else add
        into["requests"] += int(part["requests"])
        into["dropped"] += int(part["dropped"])
    return [
        DriftState(
            graph, version, v["columns"], v["now"], v["minutes"], v["total"], v["requests"], v["dropped"]
        )
        for (graph, version), v in sorted(merged.items())
    ]


@dataclass(frozen=True, slots=True)
class DriftRow:
    """One column over one window: its live distribution against the reference."""

    graph: str
    version: str
    column: str
    window: str
    rows: int  # live values counted
    psi: float | None  # None: no live values yet
    js_distance: float | None
    nan_share: float | None
    out_of_range_share: float | None
    live: tuple[int, ...]  # per bin
    reference: tuple[int, ...]
    labels: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "graph": self.graph,
            "version": self.version,
            "column": self.column,
            "window": self.window,
            "rows": self.rows,
            "psi": self.psi,
            "js_distance": self.js_distance,
            "nan_share": self.nan_share,
            "out_of_range_share": self.out_of_range_share,
            "live": list(self.live),
            "reference": list(self.reference),
            "labels": list(self.labels),
        }


def drift_rows(
    state: DriftState, profile: Profile, windows: Sequence[tuple[str, int | None]] = WINDOWS
) -> list[DriftRow]:
    """PSI, JS distance and shares per column and window (see the module docstring)."""
    rows: list[DriftRow] = []
    offset = 0
    for name in state.columns:
        ref = profile.column(name)
        if ref is None:  # a profile changed under a served version: its columns no longer line up
            raise ValueError(f"column {name!r} is not in the profile of {state.graph} {state.version}")
        width = ref.bins + 2
        for label, minutes in windows:
            counts = state.window(minutes)[offset : offset + width]
            rows.append(_row(state, ref, label, counts))
        offset += width
    return rows


def _row(state: DriftState, ref: ColumnProfile, window: str, counts: np.ndarray) -> DriftRow:
    live = counts[: ref.bins]
    nan, outside = int(counts[ref.bins]), int(counts[ref.bins + 1])
    binned = int(live.sum())
    values = binned + nan
    reference = np.asarray(ref.counts, dtype=np.float64)
    return DriftRow(
        state.graph,
        state.version,
        ref.name,
        window,
        values,
        psi(reference, live) if binned else None,
        js_distance(reference, live) if binned else None,
        nan / values if values else None,
        outside / values if values else None,
        tuple(int(c) for c in live),
        ref.counts,
        tuple(ref.labels()),
    )


def _shares(counts: np.ndarray) -> np.ndarray:
    total = float(counts.sum())
    return np.asarray(counts, dtype=np.float64) / total if total else np.zeros(len(counts))


def psi(reference: np.ndarray, live: np.ndarray) -> float:
    """Population stability index of ``live`` against ``reference`` (counts on the same bins)."""
    r = np.maximum(_shares(reference), EPSILON)
    q = np.maximum(_shares(live), EPSILON)
    return float(np.sum((q - r) * np.log(q / r)))


def js_distance(reference: np.ndarray, live: np.ndarray) -> float:
    """Jensen-Shannon distance (base 2) between the two distributions."""
    p, q = _shares(reference), _shares(live)
    m = (p + q) / 2
    divergence = 0.0
    for a in (p, q):
        nz = a > 0
        divergence += 0.5 * float(np.sum(a[nz] * np.log2(a[nz] / m[nz])))
    return math.sqrt(max(divergence, 0.0))
