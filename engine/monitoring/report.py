"""The monitoring report: every monitored version's drift per column and window, as JSON and a table.

Built by ``ServerAdmin.monitor_report`` from the workers' merged counts and the versions'
profiles; printed by ``engine monitor report`` (which also draws the plots from the JSON).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from engine.monitoring.drift import DriftRow, DriftState, drift_rows
from engine.monitoring.profile import Profile
from engine.monitoring.quality import Quality

PSI_MODERATE = 0.1
PSI_SHIFTED = 0.25
"""The usual PSI reading: below 0.1 stable, up to 0.25 moderate, above it the column has shifted
(the default threshold of the shipped alert rule, deploy/prometheus/engine-alerts.yaml)."""


def verdict(psi: float | None) -> str:
    if psi is None:
        return "no data"
    return "shifted" if psi > PSI_SHIFTED else "moderate" if psi > PSI_MODERATE else "stable"


@dataclass(frozen=True, slots=True)
class VersionSummary:
    graph: str
    version: str
    profile_source: str
    profile_created: str
    profile_rows: int
    requests: int  # requests counted (summed over workers)
    dropped: int  # requests left out of drift because the counting queue was full


@dataclass(frozen=True, slots=True)
class MonitorReport:
    versions: tuple[VersionSummary, ...]
    rows: tuple[DriftRow, ...]
    quality: tuple[Quality, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "versions": [
                {
                    "graph": v.graph,
                    "version": v.version,
                    "profile": {
                        "source": v.profile_source,
                        "created": v.profile_created,
                        "rows": v.profile_rows,
                    },
                    "requests": v.requests,
                    "dropped": v.dropped,
                }
                for v in self.versions
            ],
            "drift": [{**row.to_dict(), "verdict": verdict(row.psi)} for row in self.rows],
            "quality": [q.to_dict() for q in self.quality],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)


def build_report(
    states: Sequence[DriftState], profiles: Mapping[tuple[str, str], Profile], quality: Sequence[Quality] = ()
) -> MonitorReport:
    """The report of the merged ``states`` (versions without a profile here are left out)."""
    versions, rows = [], []
    for state in states:
        profile = profiles.get((state.graph, state.version))
        if profile is None:
            continue
        versions.append(
            VersionSummary(
                state.graph,
                state.version,
                profile.source,
                profile.created,
                profile.rows,
                state.requests,
                state.dropped,
            )
        )
        rows.extend(drift_rows(state, profile))
    return MonitorReport(tuple(versions), tuple(rows), tuple(quality))


def _num(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def render_table(report: MonitorReport) -> str:
    """One line per version, then one per column and window."""
    if not report.versions and not report.quality:
        return "no monitored graph (a graph is monitored when its folder has a profile.json)"
    lines = []
    for q in report.quality:
        labels = ", ".join(f"{n} {c}" for n, c in q.counts.items())
        values = "  ".join(f"{k} {_num(v, 4)}" for k, v in q.metrics.items())
        lines.append(
            f"{q.graph} version {q.version} quality of '{q.output}' ({q.kind}, threshold {q.threshold:g}): "
            f"{q.pairs} labelled, {q.waiting} waiting; labels: {labels}"
        )
        lines.append(f"  {values}")
        for arm, (pairs, arm_metrics) in sorted(q.arms.items()):
            shown = "  ".join(f"{k} {_num(v, 4)}" for k, v in arm_metrics.items())
            lines.append(f"  arm {arm} ({pairs} labelled): {shown}")
        for name, shadow in sorted(q.shadows.items()):
            target = f"node '{shadow.target}'" if shadow.target else "the live graph"
            lines.append(
                f"  shadow {name} on {shadow.pairs} labelled rows, against {target} on the same rows:"
            )
            for side, side_metrics in (("candidate", shadow.candidate), ("live", shadow.live)):
                lines.append(
                    f"    {side:<9} " + "  ".join(f"{k} {_num(v, 4)}" for k, v in side_metrics.items())
                )
    for v in report.versions:
        lines.append(
            f"{v.graph} version {v.version}: {v.requests} requests counted, {v.dropped} dropped; "
            f"profile from {v.profile_source} ({v.profile_rows} rows, {v.profile_created})"
        )
        names = ("rows", "psi", "js", "nan", "outside")
        lines.append(f"  {'column':<28} {'window':<6} " + " ".join(f"{n:>8}" for n in names) + "  verdict")
        for row in report.rows:
            if (row.graph, row.version) != (v.graph, v.version):
                continue
            numbers = (row.psi, row.js_distance, row.nan_share, row.out_of_range_share)
            lines.append(
                f"  {row.column:<28} {row.window:<6} {row.rows:>8} "
                + " ".join(f"{_num(n):>8}" for n in numbers)
                + f"  {verdict(row.psi)}"
            )
    return "\n".join(lines)
