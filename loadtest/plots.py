"""PNG plots drawn from the JSON report (matplotlib, headless Agg backend).

- ``latency-over-time.png``: p50/p90/p99/p99.9 of successful requests per second of intended send time;
- ``latency-distribution.png``: the percentile spectrum (HdrHistogram style: x is 1/(1-q), so the
  tail gets room);
- ``rate.png``: target rate against requests sent and OK/error answers received per second.

Warm-up is shaded grey in the time plots.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.ticker import FixedLocator, FuncFormatter


def write_plots(report: dict[str, Any], out_dir: Path) -> list[Path]:
    paths = [
        _latency_over_time(report, out_dir / "latency-over-time.png"),
        _distribution(report, out_dir / "latency-distribution.png"),
        _rate(report, out_dir / "rate.png"),
    ]
    return [p for p in paths if p is not None]


def _shade_warmup(ax: Axes, timeline: list[dict[str, Any]]) -> None:
    warm = [row["t_s"] for row in timeline if row["phase"] == "warmup"]
    if warm:
        ax.axvspan(min(warm), 0, color="0.9", label="warm-up")


def _latency_over_time(report: dict[str, Any], path: Path) -> Path:
    timeline = report["timeline"]
    fig, ax = plt.subplots(figsize=(10, 4.5))
    _shade_warmup(ax, timeline)
    t = [row["t_s"] for row in timeline]
    for key, style in (("p50", "-"), ("p90", "-"), ("p99", "-"), ("p99.9", "--")):
        values = [row.get(f"{key}_us") for row in timeline]
        ax.plot(t, [v / 1000 if v else float("nan") for v in values], style, label=key, marker=".")
    for check in report["checks"]:
        if check["name"].startswith("latency p") and check["bound"]:
            ax.axhline(check["bound"] / 1000, color="red", linewidth=0.8, linestyle=":")
            ax.annotate(
                f"SLA {check['name'][8:]}",
                (t[0] if t else 0, check["bound"] / 1000),
                fontsize=7,
                color="red",
                va="bottom",
            )
    ax.set_yscale("log")
    ax.set_xlabel("seconds since the end of warm-up (by intended send time)")
    ax.set_ylabel("latency (ms)")
    ax.set_title(f"{report['name']}: latency of successful requests per second")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _distribution(report: dict[str, Any], path: Path) -> Path:
    points = [(p["percentile"], p["latency_us"]) for p in report["distribution"] if p["percentile"] < 100]
    fig, ax = plt.subplots(figsize=(10, 4.5))
    if points:
        x = [1 / (1 - p / 100) for p, _ in points]
        ax.plot(x, [v / 1000 for _, v in points], marker=".", label="successful requests")
    ax.set_xscale("log")
    ticks = [1, 2, 10, 100, 1000, 10000, 100000]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{100 - 100 / x:g}%"))
    ax.set_xlim(1, max([10, *([1 / (1 - points[-1][0] / 100)] if points else [])]))
    for check in report["checks"]:
        if check["name"].startswith("latency p") and check["bound"]:
            q = float(check["name"][9:])
            ax.plot([1 / (1 - q / 100)], [check["bound"] / 1000], "rx")
            ax.annotate(f"SLA p{q:g}", (1 / (1 - q / 100), check["bound"] / 1000), fontsize=7, color="red")
    ax.set_xlabel("percentile")
    ax.set_ylabel("latency (ms)")
    ax.set_title(f"{report['name']}: latency distribution (measured phase)")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _rate(report: dict[str, Any], path: Path) -> Path:
    timeline = report["timeline"]
    fig, ax = plt.subplots(figsize=(10, 4.5))
    _shade_warmup(ax, timeline)
    t = [row["t_s"] for row in timeline]
    ax.plot(t, [row["target_rate"] for row in timeline], "k--", label="target", drawstyle="steps-mid")
    ax.plot(t, [row["sent_rate"] for row in timeline], label="sent", marker=".")
    ax.plot(t, [row["ok_rate"] for row in timeline], label="OK answers", marker=".")
    if any(row["error_rate"] for row in timeline):
        ax.plot(t, [row["error_rate"] for row in timeline], color="red", label="errors", marker=".")
    ax.set_xlabel("seconds since the end of warm-up")
    ax.set_ylabel("requests per second")
    ax.set_ylim(bottom=0)
    ax.set_title(f"{report['name']}: achieved vs target rate")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
