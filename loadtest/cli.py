"""The ``loadtest`` command.

    loadtest run SLA.yaml        apply the SLA's load, judge it; exit 0 pass, 1 fail, 2 misconfigured
    loadtest capacity SLA.yaml   find the highest rate that meets the SLA's assertions
    loadtest check SLA.yaml      validate the SLA file only

Reports go to ``--out`` (default ``loadtest-results/<name>-<time>``): ``report.json``,
``summary.md`` and PNG plots.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from loadtest.capacity import search, step_load
from loadtest.checks import Check, evaluate_checks
from loadtest.metrics import MetricsError
from loadtest.progress import Progress
from loadtest.report import build_report, markdown, write_json
from loadtest.runner import Prepared, RunError, prepare, run_load
from loadtest.sla import Sla, SlaError, load_sla
from loadtest.sources import SourceError
from loadtest.target import TargetError

PASS, FAIL, MISCONFIGURED = 0, 1, 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="loadtest", description="Open-loop SLA load tests for V2 gRPC servers."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("run", "apply the SLA's load profile and judge its assertions"),
        ("capacity", "search for the highest rate that meets the assertions"),
        ("check", "validate the SLA file without sending load"),
    ):
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("sla", type=Path, help="the SLA YAML file")
        if name == "check":
            continue
        p.add_argument("--out", type=Path, help="report folder (default loadtest-results/<name>-<time>)")
        p.add_argument("--url", help="override target.url (host:port)")
        p.add_argument("--processes", type=int, help="override load.processes")
        p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
        p.add_argument("--quiet", action="store_true", help="no live progress line")
    args = parser.parse_args(argv)
    try:
        sla = _overrides(load_sla(args.sla), args)
    except SlaError as exc:
        print(f"loadtest: {exc}", file=sys.stderr)
        return MISCONFIGURED
    if args.command == "check":
        print(
            f"{args.sla}: valid ({sla.target.graph} at {sla.target.url}, {sla.load.duration_s:g} s of load)"
        )
        return PASS
    try:
        prepared = prepare(sla)
        out = args.out or Path("loadtest-results") / f"{sla.name}-{dt.datetime.now():%Y%m%d-%H%M%S}"
        if args.command == "run":
            return _run(prepared, out, plots=not args.no_plots, quiet=args.quiet)
        return _capacity(prepared, out, plots=not args.no_plots, quiet=args.quiet)
    except (TargetError, SourceError, MetricsError, RunError) as exc:
        print(f"loadtest: cannot run {args.sla}: {exc}", file=sys.stderr)
        return MISCONFIGURED
    except KeyboardInterrupt:
        print("\nloadtest: interrupted", file=sys.stderr)
        return 130


def _overrides(sla: Sla, args: argparse.Namespace) -> Sla:
    if getattr(args, "url", None):
        sla = replace(sla, target=replace(sla.target, url=args.url))
    if getattr(args, "processes", None):
        if args.processes < 1:
            raise SlaError(["--processes: expected a positive integer"])
        sla = replace(sla, load=replace(sla.load, processes=args.processes))
    return sla


def _run(prepared: Prepared, out: Path, plots: bool, quiet: bool) -> int:
    sla = prepared.sla
    print(f"loadtest: {sla.name}: {prepared.pool.description}", file=sys.stderr)
    result = run_load(prepared, sla.load, None if quiet else Progress())
    checks = evaluate_checks(sla.assertions, sla.load, result)
    report = build_report(prepared, sla.load, result, checks)
    report["mode"] = "run"
    _write(report, out, plots)
    _print_verdict(sla.name, report["verdict"], checks, report, out)
    return PASS if report["verdict"] == "pass" else FAIL


def _capacity(prepared: Prepared, out: Path, plots: bool, quiet: bool) -> int:
    sla = prepared.sla
    found = search(prepared, progress=not quiet)
    shown = found.best or found.steps[-1]
    load = step_load(prepared, shown.rate)
    report = build_report(prepared, load, shown.result, shown.checks)
    report["mode"] = "capacity"
    report["capacity"] = found.to_json()
    report["verdict"] = "pass" if found.best else "fail"
    _write(report, out, plots)
    print(f"\n{sla.name}: capacity search ({len(found.steps)} steps)")
    for i, step in enumerate(found.steps, 1):
        data = step.to_json()
        print(
            f"  step {i:2d}  {step.rate:8.0f}/s  achieved {data['achieved_rate']:8.1f}/s  "
            f"{data['verdict']:4s}  {'; '.join(data['broken'])[:140]}"
        )
    if found.best:
        print(f"capacity: {found.best.rate:.0f}/s meets every assertion. {found.note}")
    else:
        print(f"capacity: no tested rate met the assertions. {found.note}")
    print(f"report: {out / 'report.json'}  summary: {out / 'summary.md'}")
    return PASS if found.best else FAIL


def _write(report: dict[str, Any], out: Path, plots: bool) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_json(report, out / "report.json")
    pngs: list[Path] = []
    if plots:
        from loadtest.plots import write_plots  # matplotlib is slow to import; only when needed

        pngs = write_plots(report, out)
    (out / "summary.md").write_text(markdown(report, [str(p) for p in pngs]))


def _print_verdict(name: str, verdict: str, checks: list[Check], report: dict[str, Any], out: Path) -> None:
    s = report["summary"]
    print(
        f"\n{name}: {verdict.upper()}  ({s['requests']} requests, achieved {s['achieved_rate']:.1f}/s "
        f"of {s['target_rate']:.1f}/s target, {s['errors']} errors)"
    )
    for check in checks:
        print(f"  {'pass' if check.ok else 'FAIL'}  {check.message}")
    print(f"report: {out / 'report.json'}  summary: {out / 'summary.md'}")


if __name__ == "__main__":
    sys.exit(main())
