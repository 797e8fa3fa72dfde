"""``ShadowReport``: plain data, per graph → per shadow → counters, latency and per-output statistics.

Built by ``ShadowComparison.snapshot`` (live) or ``engine.shadow.offline`` (from a
request log or a replay), shipped as JSON (``to_json`` / ``from_json``) and printed
with ``engine.shadow.table.render_table``. Latencies are in microseconds; a
statistic that has no data yet is ``None``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Spread:
    """Mean and nearest-rank quantiles of one measure (max and mean exact, quantiles within 0.5%)."""

    mean: float | None = None
    p50: float | None = None
    p99: float | None = None
    max: float | None = None


@dataclass(frozen=True, slots=True)
class ShadowCounters:
    """What happened to each request that reached the shadow (settled outcomes only).

    ``sampled`` = ``run + shed + errors + timeouts + cancelled + no_live + unsettled``; ``skipped``
    were not sampled. ``no_live``: the live target failed, so there was nothing to compare with.
    ``unsettled`` (a report rebuilt from the request log only): the record was written before the
    shadow finished, so its outcome is not in the log.
    """

    sampled: int = 0
    skipped: int = 0
    run: int = 0
    shed: int = 0
    errors: int = 0
    timeouts: int = 0
    cancelled: int = 0
    no_live: int = 0
    unsettled: int = 0


LATENCY_BOUNDS_S: tuple[float, ...] = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
"""The ``le`` bounds (seconds) of the shadow latency histograms that /metrics exports."""


@dataclass(frozen=True, slots=True)
class LatencyBuckets:
    """One side's durations as a Prometheus histogram: counts at or below ``LATENCY_BOUNDS_S``,
    the count and the sum in seconds. Added over workers, they stay exact."""

    le: list[int] = field(default_factory=list)
    count: int = 0
    sum_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Latency:
    """Live target vs shadow durations in µs, and the per-request difference (shadow - live)."""

    live: Spread = field(default_factory=Spread)
    shadow: Spread = field(default_factory=Spread)
    diff: Spread = field(default_factory=Spread)
    live_buckets: LatencyBuckets = field(default_factory=LatencyBuckets)
    shadow_buckets: LatencyBuckets = field(default_factory=LatencyBuckets)


@dataclass(frozen=True, slots=True)
class Confusion:
    """Rows = live class, columns = shadow class, in ``labels`` order (``(other)`` last if used)."""

    labels: list[str] = field(default_factory=list)
    counts: list[list[int]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class OutputReport:
    """One compared output. ``rows``: rows compared; ``agree``: rows the rule calls equal.

    Numeric and score: ``abs_diff`` / ``rel_diff`` describe each row's largest element
    difference over the finite rows; ``nonfinite``: rows whose difference is NaN/inf (they
    disagree). Class: ``confusion``. Score: ``spearman`` over the last ``window_rows`` rows.
    ``missing``: requests where live or shadow lacked the output; ``mismatched``: requests
    where their shapes or types could not be compared.
    """

    kind: str
    rule: dict[str, Any]
    rows: int = 0
    agree: int = 0
    missing: int = 0
    mismatched: int = 0
    nonfinite: int = 0
    abs_diff: Spread | None = None
    rel_diff: Spread | None = None
    confusion: Confusion | None = None
    spearman: float | None = None
    window_rows: int = 0

    @property
    def agreement(self) -> float | None:
        """Share of compared rows that agree (within tolerance, or same class), 0..1."""
        return self.agree / self.rows if self.rows else None


@dataclass(frozen=True, slots=True)
class ShadowSummary:
    target: str
    counters: ShadowCounters
    latency: Latency
    outputs: dict[str, OutputReport]
    last_error: str = ""


@dataclass(frozen=True, slots=True)
class ShadowReport:
    graphs: dict[str, dict[str, ShadowSummary]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "graphs": {g: {s: asdict(v) for s, v in shadows.items()} for g, shadows in self.graphs.items()}
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ShadowReport:
        return cls({g: {s: _summary(v) for s, v in shadows.items()} for g, shadows in data["graphs"].items()})

    @classmethod
    def from_json(cls, text: str) -> ShadowReport:
        return cls.from_dict(json.loads(text))


def _spread(data: dict[str, Any] | None) -> Spread | None:
    return None if data is None else Spread(**data)


def _output(data: dict[str, Any]) -> OutputReport:
    fields = dict(data)
    fields["abs_diff"] = _spread(fields.get("abs_diff"))
    fields["rel_diff"] = _spread(fields.get("rel_diff"))
    confusion = fields.get("confusion")
    fields["confusion"] = None if confusion is None else Confusion(**confusion)
    return OutputReport(**fields)


def _summary(data: dict[str, Any]) -> ShadowSummary:
    latency = data["latency"]
    return ShadowSummary(
        target=data["target"],
        counters=ShadowCounters(**data["counters"]),
        latency=Latency(
            live=Spread(**latency["live"]),
            shadow=Spread(**latency["shadow"]),
            diff=Spread(**latency["diff"]),
            live_buckets=LatencyBuckets(**latency.get("live_buckets", {})),
            shadow_buckets=LatencyBuckets(**latency.get("shadow_buckets", {})),
        ),
        outputs={name: _output(o) for name, o in data["outputs"].items()},
        last_error=data.get("last_error", ""),
    )


def render_table(report: ShadowReport) -> str:
    """A fixed-width summary a person reads: one block per shadow, a confusion matrix per class output."""
    blocks = [
        _block(graph, shadow, summary)
        for graph, shadows in sorted(report.graphs.items())
        for shadow, summary in sorted(shadows.items())
    ]
    return "\n\n".join(blocks) + "\n" if blocks else "no shadows\n"


def _block(graph: str, shadow: str, s: ShadowSummary) -> str:
    c = s.counters
    mirrors = f"mirrors node {s.target}" if s.target else "mirrors the whole graph"
    lines = [
        f"graph {graph} · shadow {shadow} ({mirrors})",
        f"  requests  sampled {c.sampled}  run {c.run}  skipped {c.skipped}  shed {c.shed}  errors {c.errors}"
        f"  timeouts {c.timeouts}  cancelled {c.cancelled}  no live {c.no_live}"
        + (f"  unsettled {c.unsettled} (logged before the shadow finished)" if c.unsettled else ""),
        f"  {'latency':<9} {'p50':>10} {'p99':>10} {'mean':>10} {'max':>10}",
    ]
    for name, spread in (("live", s.latency.live), ("shadow", s.latency.shadow), ("diff", s.latency.diff)):
        sign = name == "diff"
        cells = (spread.p50, spread.p99, spread.mean, spread.max)
        lines.append(f"  {name:<9} " + " ".join(f"{_duration(v, sign):>10}" for v in cells))
    width = max([6, *(len(n) for n in s.outputs)])
    head = (
        "kind",
        "rows",
        "agree",
        "within tol",
        "|d| p50",
        "|d| p99",
        "|d| max",
        "rel p50",
        "rel p99",
        "spearman",
    )
    lines.append(f"  {'output':<{width}} {head[0]:<8}" + "".join(f"{h:>11}" for h in head[1:]))
    for name, o in s.outputs.items():
        numeric = o.abs_diff is not None
        a, r = o.abs_diff or Spread(), o.rel_diff or Spread()
        row_cells = (
            str(o.rows), _pct(None if numeric else o.agreement), _pct(o.agreement if numeric else None),
            _num(a.p50), _num(a.p99), _num(a.max), _pct(r.p50), _pct(r.p99), _num(o.spearman),
        )  # fmt: skip
        lines.append(f"  {name:<{width}} {o.kind:<8}" + "".join(f"{cell:>11}" for cell in row_cells))
        extra = [
            f"{k} {v}"
            for k, v in (("missing", o.missing), ("mismatched", o.mismatched), ("non-finite", o.nonfinite))
            if v
        ]
        if extra:
            lines.append(f"  {'':<{width}} " + ", ".join(extra))
    for name, o in s.outputs.items():
        if o.confusion is not None and o.confusion.labels:
            lines.extend(_confusion(name, o.confusion))
    if s.last_error:
        lines.append(f"  last error: {s.last_error}")
    return "\n".join(lines)


def _confusion(name: str, m: Confusion) -> list[str]:
    cell = max(
        [6, *(len(label) + 1 for label in m.labels), *(len(str(n)) + 1 for row in m.counts for n in row)]
    )
    first = max(12, *(len(label) + 4 for label in m.labels))
    lines = [
        f"  confusion of {name} (rows: live, columns: shadow)",
        " " * first + "".join(f"{x:>{cell}}" for x in m.labels),
    ]
    lines.extend(
        f"    {label:<{first - 4}}" + "".join(f"{n:>{cell}}" for n in row)
        for label, row in zip(m.labels, m.counts, strict=True)
    )
    return lines


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _duration(us: float | None, signed: bool = False) -> str:
    if us is None:
        return "-"
    sign = "+" if signed and us > 0 else ""
    size = abs(us)
    if size < 1000:
        return f"{sign}{us:.0f} µs"
    if size < 1_000_000:
        return f"{sign}{us / 1000:.3g} ms"
    return f"{sign}{us / 1_000_000:.3g} s"
