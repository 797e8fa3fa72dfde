"""Reference profiles: what a graph's columns looked like on the data it was built for.

A profile lives next to its ``graph.yaml`` as ``profile.json`` (so it versions with the graph)
and holds, per monitored column, the reference distribution live traffic is compared with:

    numeric      interior bin edges (reference deciles; a column with few distinct values gets
                 a bin per value), the reference count per bin, min/max, NaN count
    categorical  the most frequent values (text) with their counts, and the rest as "other"

Columns are named as people read them (``engine.monitoring.layout``): a graph input
``amount``, a named input column ``txn.hour`` (``txn[2]`` when the contract does not name it), a
feature field ``user.account_age_days``, a node output ``ip_risk.prob`` and a served output
``outputs.score``. ``ColumnProfile.bin_counts`` counts values on the reference's bins, and
returns two more counts at the end: NaN (or empty) values, and values outside the reference's
[min, max] (numeric) or not among its values (categorical).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

PROFILE_FILE = "profile.json"
SCHEMA = "engine.profile/1"
BINS = 10
"""Numeric columns: reference deciles (fewer bins when the column has fewer distinct values)."""
TOP_VALUES = 20
"""Categorical columns: the most frequent values kept by name; the rest count as "other"."""
MAX_DISTINCT = 50
"""A text column with more distinct values than this in the reference is an identifier, not a
distribution: it is left out of the profile (and of drift)."""
NUMERIC = "numeric"
CATEGORICAL = "categorical"
OTHER = "(other)"


@dataclass(frozen=True, slots=True)
class ColumnProfile:
    name: str
    kind: str  # numeric | categorical
    rows: int
    nan: int  # NaN (numeric) or empty (text) values
    counts: tuple[int, ...]  # per bin (numeric: len(edges) + 1) or per value then other (categorical)
    edges: tuple[float, ...] = ()  # numeric: interior edges, ascending; bin i is [edges[i-1], edges[i])
    low: float = 0.0  # numeric: reference min and max (finite values)
    high: float = 0.0
    values: tuple[str, ...] = ()  # categorical: the top values, most frequent first

    @property
    def bins(self) -> int:
        return len(self.counts)

    def labels(self) -> list[str]:
        """A label per bin, for tables and plots."""
        if self.kind == CATEGORICAL:
            return [*self.values, OTHER]
        bounds = ["-inf", *(f"{e:.4g}" for e in self.edges), "inf"]
        return [f"[{bounds[i]}, {bounds[i + 1]})" for i in range(self.bins)]

    def bin_counts(self, values: np.ndarray) -> np.ndarray:
        """Counts of ``values`` per bin, then NaN/empty, then outside the reference (int64)."""
        out = np.zeros(self.bins + 2, dtype=np.int64)
        flat = values.reshape(-1)
        if not flat.size:
            return out
        if self.kind == CATEGORICAL:
            index = {v.encode(): i for i, v in enumerate(self.values)}
            other = self.bins - 1
            keys = [_as_bytes(v) for v in flat]
            codes = np.fromiter((index.get(k, other) for k in keys), dtype=np.int64, count=flat.size)
            out[: self.bins] = np.bincount(codes, minlength=self.bins)
            out[self.bins] = sum(1 for k in keys if not k)
            out[self.bins + 1] = int(np.count_nonzero(codes == other))
            return out
        x = flat.astype(np.float64, copy=False)
        nan = np.isnan(x)
        n_nan = int(np.count_nonzero(nan))
        if n_nan:
            x = x[~nan]
        out[: self.bins] = np.bincount(np.searchsorted(self.edges, x, side="right"), minlength=self.bins)
        out[self.bins] = n_nan
        out[self.bins + 1] = int(np.count_nonzero((x < self.low) | (x > self.high)))
        return out


@dataclass(frozen=True, slots=True)
class Profile:
    """Every monitored column's reference; ``source`` says what it was built from."""

    graph: str
    version: str
    source: str
    rows: int
    columns: tuple[ColumnProfile, ...]
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    skipped: Mapping[str, str] = field(default_factory=dict)  # column -> why it is not profiled

    def column(self, name: str) -> ColumnProfile | None:
        return next((c for c in self.columns if c.name == name), None)

    def to_json(self) -> str:
        data = {"schema": SCHEMA, **asdict(self)}
        return json.dumps(data, indent=1, sort_keys=False) + "\n"

    def save(self, folder: Path) -> Path:
        path = folder / PROFILE_FILE
        partial = path.with_suffix(".json.tmp")
        partial.write_text(self.to_json())
        partial.replace(path)
        return path

    @classmethod
    def from_json(cls, text: str) -> Profile:
        data = json.loads(text)
        if data.get("schema") != SCHEMA:
            raise ValueError(f"not an engine profile (schema {data.get('schema')!r}, expected {SCHEMA})")
        columns = tuple(
            ColumnProfile(
                name=str(c["name"]),
                kind=str(c["kind"]),
                rows=int(c["rows"]),
                nan=int(c["nan"]),
                counts=tuple(int(v) for v in c["counts"]),
                edges=tuple(float(v) for v in c["edges"]),
                low=float(c["low"]),
                high=float(c["high"]),
                values=tuple(str(v) for v in c["values"]),
            )
            for c in data["columns"]
        )
        return cls(
            graph=str(data["graph"]),
            version=str(data["version"]),
            source=str(data["source"]),
            rows=int(data["rows"]),
            columns=columns,
            created=str(data.get("created", "")),
            skipped={str(k): str(v) for k, v in data.get("skipped", {}).items()},
        )


def read_profile(folder: Path) -> Profile | None:
    """The folder's ``profile.json`` (None when it has none); ValueError when it is unreadable."""
    path = folder / PROFILE_FILE
    if not path.is_file():
        return None
    try:
        return Profile.from_json(path.read_text())
    except (OSError, KeyError, TypeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{PROFILE_FILE}: unreadable ({type(exc).__name__})") from None


def profile_column(name: str, values: np.ndarray) -> ColumnProfile | str:
    """The reference of one column from its values, or the reason it cannot have one."""
    flat = values.reshape(-1)
    if not flat.size:
        return "no values"
    if flat.dtype == object:
        keys = [_as_bytes(v) for v in flat]
        empty = sum(1 for k in keys if not k)
        distinct, counts = np.unique(np.array([k for k in keys if k], dtype=object), return_counts=True)
        if len(distinct) > MAX_DISTINCT:
            return f"{len(distinct)} distinct values (an identifier?)"
        order = np.argsort(-counts, kind="stable")[:TOP_VALUES]
        top = tuple(distinct[i].decode("utf-8", "replace") for i in order)
        kept = [int(counts[i]) for i in order]
        other = int(counts.sum()) - sum(kept)
        return ColumnProfile(name, CATEGORICAL, int(flat.size), empty, (*kept, other), values=top)
    x = flat.astype(np.float64)
    nan = np.isnan(x)
    finite = x[~nan & np.isfinite(x)]
    if not finite.size:
        return "every value is NaN"
    distinct = np.unique(finite)
    if len(distinct) <= BINS:
        edges = distinct  # a bin per value: [v_i, v_i+1)
    else:
        edges = np.unique(np.quantile(finite, np.linspace(0, 1, BINS + 1)[1:-1]))
    counts = np.bincount(np.searchsorted(edges, x[~nan], side="right"), minlength=len(edges) + 1)
    return ColumnProfile(
        name,
        NUMERIC,
        int(flat.size),
        int(np.count_nonzero(nan)),
        tuple(int(c) for c in counts),
        edges=tuple(float(e) for e in edges),
        low=float(finite.min()),
        high=float(finite.max()),
    )


def build_profile(
    graph: str, version: str, source: str, columns: Mapping[str, Sequence[np.ndarray]]
) -> Profile:
    """A profile of every column's values (each a list of arrays, concatenated here)."""
    profiled: list[ColumnProfile] = []
    skipped: dict[str, str] = {}
    rows = 0
    for name, parts in columns.items():
        present = [p for p in parts if p is not None]
        if not present:
            skipped[name] = "never computed (a node inside a switch or split branch)"
            continue
        values = np.concatenate([p.reshape(-1) for p in present])
        result = profile_column(name, values)
        if isinstance(result, str):
            skipped[name] = result
        else:
            profiled.append(result)
            rows = max(rows, result.rows)
    return Profile(graph, version, source, rows, tuple(profiled), skipped=skipped)


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8")
