"""``engine shadow``: comparison reports (live from a server, or offline from request logs) and replay.

    engine shadow report fraud                      # ask a running server (ShadowReport RPC)
    engine shadow report --from logs/ --graph fraud # rebuild the same report from request-log files
    engine shadow replay --from logs/ --graph fraud:1 --candidate graphs-next/fraud

``replay`` loads the candidate graph here (not on a server), re-runs every recorded OK request
of the graph through it and compares its outputs with the recorded ones. A ``features`` node
of the candidate reads the values *recorded with the request* (the record's ``features``), not
the store as it is now, so the comparison is point-in-time correct.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import numpy as np

from engine.cli.remote import add_connection_arguments, connect

RECORDED: ContextVar[Mapping[str, Any] | None] = ContextVar("engine_recorded_features", default=None)
"""The record being replayed's ``features`` entry, read by ``RecordedSource``."""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    shadow = sub.add_parser("shadow", help="shadow comparison reports; offline replay of a candidate graph")
    actions = shadow.add_subparsers(metavar="ACTION")
    report = actions.add_parser(
        "report", help="what the shadows measured: from a server, or --from request logs"
    )
    report.add_argument("graph", nargs="?", help="one graph (default: every graph with shadows)")
    report.add_argument(
        "--from", dest="source", type=Path, help="request-log directory or file: build offline"
    )
    report.add_argument("--format", choices=("table", "json"), default="table")
    add_connection_arguments(report)
    report.set_defaults(run=_report)
    replay = actions.add_parser(
        "replay", help="re-run recorded requests through a candidate graph and compare"
    )
    replay.add_argument(
        "--from", dest="source", type=Path, required=True, help="request-log directory or file"
    )
    replay.add_argument(
        "--graph", required=True, help="GRAPH or GRAPH:VERSION whose recorded requests to replay"
    )
    replay.add_argument(
        "--candidate", type=Path, required=True, help="the candidate: a graph.yaml or its folder"
    )
    replay.add_argument(
        "--compare",
        help='rules per output as JSON, e.g. \'{"score": {"abs_tol": 0.02}, "decision": "class"}\'',
    )
    replay.add_argument("--concurrency", type=int, default=8)
    replay.add_argument("--format", choices=("table", "json"), default="table")
    replay.set_defaults(run=_replay)
    shadow.set_defaults(run=lambda args: _usage(shadow))


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _print(report: Any, fmt: str) -> None:
    from engine.shadow.report import render_table

    print(report.to_json() if fmt == "json" else render_table(report))


def _report(args: argparse.Namespace) -> int:
    if args.source is not None:
        from engine.observability.log_reader import LogReadError, ReadStats, read_records
        from engine.shadow.offline import OfflineStats, report_from_records

        stats, read = OfflineStats(), ReadStats()
        try:
            report = report_from_records(read_records(args.source, read), graph=args.graph, stats=stats)
        except FileNotFoundError as exc:
            print(f"engine shadow report: no request log at {exc}", file=sys.stderr)
            return 2
        except LogReadError as exc:
            print(f"engine shadow report: {exc}", file=sys.stderr)
            return 2
        _print(report, args.format)
        print(
            f"({stats.records} records read, {stats.used} used, {stats.ignored} ignored, "
            f"{stats.unreadable} unreadable)",
            file=sys.stderr,
        )
        return 0
    from engine.protocol.client import RemoteError
    from engine.protocol.generated.engine.v1 import engine_pb2 as epb

    client = connect(args)
    try:
        response = client.admin(
            "ShadowReport", epb.ShadowReportRequest(graph=args.graph or ""), epb.ShadowReportResponse
        )
    except RemoteError as exc:
        print(f"engine shadow report: {exc.code}: {exc.details}", file=sys.stderr)
        return 1
    finally:
        client.close()
    print(response.json if args.format == "json" else response.table)
    return 0


class RecordedSource:
    """A ``FeatureSource`` answering with the values recorded with the request being replayed."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.missing_fields = 0

    def schema(self) -> None:
        return None

    async def fetch(
        self, keys: Sequence[str], fields: Sequence[Any], *, max_age_s: float | None = None
    ) -> Any:
        from engine.execution.features import default_batch
        from engine.interfaces import FEATURE_STATUS_NAMES, FeatureStatus
        from engine.shadow.offline import tensor_from_json

        recorded = RECORDED.get() or {}
        batch = default_batch(tuple(fields), len(keys), FeatureStatus.MISSING)
        entries = [e for e in recorded.values() if isinstance(e, Mapping) and e.get("source") == self.name]
        for col, field in enumerate(fields):
            entry = next((e for e in entries if field.name in e.get("values", {})), None)
            if entry is None:
                self.missing_fields += 1
                continue
            values = tensor_from_json(entry["values"][field.name]).reshape(-1)
            if values.shape[0] != len(keys):
                self.missing_fields += 1
                continue
            batch.values[field.name] = values.astype(batch.values[field.name].dtype, copy=False)
            names = entry.get("status", {}).get(field.name, [])
            if len(names) == len(keys):
                batch.status[:, col] = [FEATURE_STATUS_NAMES.index(n) for n in names]
        return batch

    async def close(self) -> None:
        return None


class RecordedCatalog:
    """Every source name resolves to a ``RecordedSource`` (no store is read during a replay)."""

    def __init__(self) -> None:
        self.sources: dict[str, RecordedSource] = {}

    def get(self, name: str) -> RecordedSource:
        return self.sources.setdefault(name, RecordedSource(name))

    def names(self) -> list[str]:
        return list(self.sources)

    def cached(self, name: str, ttl_s: float) -> RecordedSource:
        return self.get(name)


def _replay(args: argparse.Namespace) -> int:
    from engine.cli.features import find_config
    from engine.cli.graph import model_sources
    from engine.errors import GraphInvalid
    from engine.execution import PlanRunner
    from engine.graph import load_graph
    from engine.observability.log_reader import LogReadError, read_records
    from engine.runtimes.onnx import OnnxRuntimeFactory
    from engine.shadow.offline import OfflineStats, replay
    from engine.shadow.rules import parse_rules

    graph, _, version = args.graph.partition(":")
    path = args.candidate / "graph.yaml" if args.candidate.is_dir() else args.candidate
    try:
        rules = parse_rules(json.loads(args.compare)) if args.compare else None
    except (ValueError, json.JSONDecodeError) as exc:
        print(f"engine shadow replay: --compare: {exc}", file=sys.stderr)
        return 2
    runtimes = OnnxRuntimeFactory()
    catalog = RecordedCatalog()
    try:  # a candidate may name registry models (models:/NAME@challenger): the repository's registry
        models = model_sources(find_config(None, [path]))
        candidate = load_graph(path, runtimes, catalog, models)
        models.close()
    except ValueError as exc:
        print(f"engine shadow replay: {exc}", file=sys.stderr)
        runtimes.close()
        return 2
    except GraphInvalid as exc:
        for diagnostic in exc.diagnostics:
            print(diagnostic, file=sys.stderr)
        runtimes.close()
        return 1
    runner = PlanRunner(candidate.plan)
    names = [spec.name for spec in candidate.plan.inputs]
    outputs = [spec.name for spec in candidate.plan.outputs]

    async def run_candidate(
        inputs: dict[str, np.ndarray], features: Mapping[str, Any] | None
    ) -> dict[str, np.ndarray]:
        missing = [n for n in names if n not in inputs]
        if missing:
            raise ValueError(f"the record has no input {', '.join(missing)} (the candidate needs it)")
        token = RECORDED.set(features)
        try:
            result = await runner.run([inputs[n] for n in names])
        finally:
            RECORDED.reset(token)
        return dict(zip(outputs, result, strict=True))

    def wanted(records: Any) -> Any:
        for record in records:
            if not version or record.get("version") == version:
                yield record

    stats = OfflineStats()
    try:
        report = asyncio.run(
            replay(
                wanted(read_records(args.source)),
                run_candidate,
                graph=graph,
                rules=rules,
                shadow=f"replay:{candidate.name}:{candidate.version}",
                concurrency=max(1, args.concurrency),
                stats=stats,
            )
        )
    except FileNotFoundError as exc:
        print(f"engine shadow replay: no request log at {exc}", file=sys.stderr)
        return 2
    except LogReadError as exc:
        print(f"engine shadow replay: {exc}", file=sys.stderr)
        return 2
    finally:
        candidate.close()
        runtimes.close()
    _print(report, args.format)
    missing = sum(s.missing_fields for s in catalog.sources.values())
    note = f", {missing} feature field(s) not recorded (defaults used)" if missing else ""
    print(
        f"({stats.records} records read, {stats.used} replayed, {stats.ignored} ignored, "
        f"{stats.unreadable} unreadable{note})",
        file=sys.stderr,
    )
    if not stats.used:  # nothing was compared: a script must not read that as agreement
        print(
            f"engine shadow replay: no record of graph '{graph}'"
            + (f" version {version}" if version else "")
            + f" could be replayed from {args.source}",
            file=sys.stderr,
        )
        return 1
    return 0
