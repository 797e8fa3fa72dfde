"""The run report: one JSON document (the record) and a Markdown summary rendered from it.

Everything a reader needs is in the JSON (``report.json``): the verdict and
every check, the load asked for and applied, latency of successful and of all
requests (µs), errors by status code, the generator's own lag, a per-second
timeline, the latency percentile spectrum, the per-node breakdown and the
server metrics. The Markdown (``summary.md``) and the plots are drawn from it.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from loadtest import histograms
from loadtest.breakdown import node_breakdown
from loadtest.checks import Check
from loadtest.runner import WINDOW_S, Prepared, RunResult
from loadtest.sla import Load
from loadtest.units import format_ms

REPORT_VERSION = 1


def build_report(prepared: Prepared, load: Load, result: RunResult, checks: list[Check]) -> dict[str, Any]:
    sla = prepared.sla
    extra = tuple(sla.assertions.latency_us)
    requests = result.requests
    duration = result.duration_s
    return {
        "report_version": REPORT_VERSION,
        "tool": "loadtest",
        "name": sla.name,
        "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "verdict": "pass" if all(c.ok for c in checks) else "fail",
        "checks": [c.to_json() for c in checks],
        "target": {"url": sla.target.url, "graph": sla.target.graph, "version": sla.target.version},
        "source": prepared.pool.description,
        "load": {
            "arrivals": load.arrivals,
            "warmup_s": load.warmup_s,
            "duration_s": duration,
            "processes": load.processes,
            "stages": [
                {"from": s.start_rate, "to": s.end_rate, "duration_s": s.duration_s} for s in load.stages
            ],
        },
        "summary": {
            "requests": requests,
            "ok": result.outcomes.get("OK", 0),
            "errors": result.errors,
            "error_rate": result.errors / requests if requests else 0.0,
            "outcomes": dict(result.outcomes.most_common()),
            "scheduled": result.schedule.measured_count,
            # the profile's average rate (a Poisson schedule's realised count varies around it)
            "target_rate": sum((st.start_rate + st.end_rate) / 2 * st.duration_s for st in load.stages)
            / duration
            if duration
            else 0.0,
            "sent_rate": result.sent_in_period / duration if duration else 0.0,
            "achieved_rate": result.completed_ok_in_period / duration if duration else 0.0,
            "wall_s": round(result.wall_s, 3),
            "latency_ok_us": histograms.summary(result.ok, extra),
            "latency_all_us": histograms.summary(result.all, extra),
            # successful requests timed from their actual send: what a closed-loop tool would report
            "latency_from_send_us": histograms.summary(result.from_send, extra),
        },
        "generator": {
            "lag_us": histograms.summary(result.lag),
            "late_requests": result.late,
            "late_fraction": result.late / requests if requests else 0.0,
            "max_lag_allowed_us": load.max_lag_s * 1e6,
        },
        "timeline": _timeline(result),
        "distribution": [{"percentile": p, "latency_us": v} for p, v in histograms.spectrum(result.ok)],
        "nodes": node_breakdown(
            result.stats_before,
            result.stats_after,
            sla.target.graph,
            sla.target.version,
            start_late_us=result.stats_before_late_ns // 1000,
        ),
    }


def _timeline(result: RunResult) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for w in result.windows:
        t = w.index * WINDOW_S
        scheduled_t = t + result.schedule.warmup_ns / 1e9 + WINDOW_S / 2
        row: dict[str, Any] = {
            "t_s": t,
            "phase": "warmup" if w.index < 0 else "measure" if t < result.duration_s else "drain",
            "target_rate": round(result.schedule.rate_at(scheduled_t), 3),
            "sent_rate": w.sent / WINDOW_S,
            "ok_rate": w.completed_ok / WINDOW_S,
            "error_rate": w.completed_error / WINDOW_S,
            "requests": sum(w.outcomes.values()),
            "errors": sum(n for c, n in w.outcomes.items() if c != "OK"),
            "lag_max_us": w.lag_max_us,
        }
        for q in histograms.REPORTED:
            row[f"p{q:g}_us"] = histograms.percentile(w.ok, q)
        row["max_us"] = float(w.ok.get_max_value()) if w.ok.get_total_count() else None
        rows.append(row)
    return rows


def write_json(report: dict[str, Any], path: Path) -> Path:
    path.write_text(json.dumps(report, indent=2, sort_keys=False) + "\n")
    return path


def markdown(report: dict[str, Any], plots: Sequence[str] = ()) -> str:
    s = report["summary"]
    g = report["generator"]
    t = report["target"]
    lines = [
        f"# {report['name']}: {report['verdict'].upper()}",
        "",
        f"`{t['graph']}`{' version ' + t['version'] if t['version'] else ''} at `{t['url']}` · "
        f"{report['load']['duration_s']:g} s measured after {report['load']['warmup_s']:g} s warm-up · "
        f"{report['load']['arrivals']} arrivals · {report['load']['processes']} generator process(es) · "
        f"finished {report['finished_at']}",
        "",
        f"Source: {report['source']}",
        "",
        "## Checks",
        "",
        "| | check | result |",
        "|---|---|---|",
    ]
    for c in report["checks"]:
        lines.append(f"| {'pass' if c['ok'] else '**FAIL**'} | {c['name']} | {_cell(c['message'])} |")
    lines += [
        "",
        "## Load",
        "",
        "| target rate | sent rate | achieved (OK answers/s) | requests | errors |",
        "|---:|---:|---:|---:|---:|",
        f"| {s['target_rate']:.1f}/s | {s['sent_rate']:.1f}/s | {s['achieved_rate']:.1f}/s | "
        f"{s['requests']} | {s['errors']} ({s['error_rate']:.3%}) |",
        "",
        "## Latency (from each request's intended send time)",
        "",
        _latency_table(s["latency_ok_us"], s["latency_all_us"], s["latency_from_send_us"]),
        "",
        "Latency is timed from each request's *intended* send time, so queueing behind a slow "
        "answer or a late generator is included (no coordinated omission). The last row times "
        "the same successful requests from their actual send, as a closed-loop tool would.",
        "",
    ]
    if s["outcomes"]:
        lines += ["Outcomes: " + ", ".join(f"{code} {n}" for code, n in s["outcomes"].items()), ""]
    lag = g["lag_us"]
    lines += [
        "## Generator",
        "",
        f"Send lag (actual - intended send time): p50 {format_ms(lag['p50_us'])}, "
        f"p99 {format_ms(lag['p99_us'])}, max {format_ms(lag['max_us'])}; "
        f"{g['late_requests']} requests ({g['late_fraction']:.2%}) sent more "
        f"than 1 ms late. Allowed p99: {format_ms(g['max_lag_allowed_us'])}.",
        "",
    ]
    if report.get("nodes"):
        lines += _nodes(report["nodes"])
    if report.get("capacity"):
        lines += _capacity(report["capacity"])
    if plots:
        lines += ["## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in plots] + [""]
    return "\n".join(lines)


def _latency_table(ok: dict[str, Any], all_: dict[str, Any], from_send: dict[str, Any]) -> str:
    keys = [k for k in ok if k.startswith("p")]
    head = "| requests | count | " + " | ".join(k.removesuffix("_us") for k in keys) + " | max |"
    rule = "|---|---:|" + "---:|" * (len(keys) + 1)
    rows = [
        f"| {label} | {h['count']} | "
        + " | ".join(format_ms(h[k]) for k in keys)
        + f" | {format_ms(h['max_us'])} |"
        for label, h in (
            ("successful", ok),
            ("all (errors too)", all_),
            ("successful, from actual send", from_send),
        )
    ]
    return "\n".join([head, rule, *rows])


def _nodes(nodes: dict[str, Any]) -> list[str]:
    lines = [
        "## Per node (server-side ModelStatistics, delta over the measurement)",
        "",
        "| node | calls | rows | failures | mean | share of graph time |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    graph = nodes.get("graph")
    if graph:
        lines.append(
            f"| **{graph['name']}** (whole graph) | {graph['calls']} | {graph['rows']} | "
            f"{graph['failures']} | {format_ms(graph['mean_us'])} | |"
        )
    for row in nodes["nodes"]:
        share = f"{row['share_of_graph']:.1%}" if row.get("share_of_graph") is not None else "-"
        lines.append(
            f"| {row['node']} | {row['calls']} | {row['rows']} | {row['failures']} | "
            f"{format_ms(row['mean_us'])} | {share} |"
        )
    lines += [
        "",
        "Node times overlap when nodes run concurrently, so shares need not add up to 100 %. "
        "Counters are server-wide: other traffic during the run is included. "
        f"The start snapshot was taken {format_ms(nodes.get('start_late_us', 0))} after the warm-up "
        "ended: requests answered in between count as warm-up.",
        "",
    ]
    return lines


def _capacity(capacity: dict[str, Any]) -> list[str]:
    best = capacity.get("capacity_rate")
    lines = [
        "## Capacity search",
        "",
        f"Highest rate meeting every assertion: **{best:.0f}/s**"
        if best
        else "No tested rate met the assertions.",
        "",
        "| step | target | achieved | p99 (ok) | errors | verdict | broken checks |",
        "|---:|---:|---:|---:|---:|---|---|",
    ]
    for i, step in enumerate(capacity["steps"], 1):
        lines.append(
            f"| {i} | {step['rate']:.0f}/s | {step['achieved_rate']:.0f}/s | {format_ms(step['p99_us'])} | "
            f"{step['error_rate']:.2%} | {step['verdict']} | {_cell('; '.join(step['broken']))} |"
        )
    if capacity.get("note"):
        lines += ["", capacity["note"]]
    return [*lines, ""]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
