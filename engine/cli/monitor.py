"""``engine profile build`` (reference profiles), ``engine monitor report`` (drift and live quality
from a server) and ``engine feedback load`` (labels for earlier predictions).

    engine profile build graphs/fraud --data train.csv        # run the graph over training data
    engine profile build graphs/fraud --from logs/ --since 1d # or profile what it served
    engine monitor report fraud [--format json] [--plots DIR] # ask a running server
    engine feedback load labels.csv --graph fraud --id request_id --label is_fraud

``--data`` (CSV or Parquet) needs a column per monitored input column: ``amount``, ``user_id``,
``txn.ip_risk_score``... (a contract's column names, else ``txn[0]``); the graph is loaded here
and run over the rows in batches (features nodes read their stores, as when serving), so the
profile also covers feature fields and node outputs. ``--from`` reads request-log records of the
graph's version (OK ones) and profiles what they hold: inputs, fetched features, node outputs
(``logging: nodes: true``) and served outputs; redacted, hashed or truncated tensors are
skipped. The profile is written to ``profile.json`` in the graph's folder.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from engine.cli.remote import add_connection_arguments, connect

BATCH_ROWS = 1024


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    profile = sub.add_parser("profile", help="reference profiles of a graph's columns (drift baseline)")
    actions = profile.add_subparsers(metavar="ACTION")
    build = actions.add_parser("build", help="write profile.json into a graph's folder")
    build.add_argument("graph", type=Path, help="the graph's folder (or its graph.yaml)")
    source = build.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=Path, help="training data: a .csv or .parquet file")
    source.add_argument("--from", dest="logs", type=Path, help="request-log directory or file")
    build.add_argument("--since", help="with --from: only records this recent (e.g. 1h, 7d)")
    build.add_argument("--config", type=Path, help="engine.yaml with feature_sources (default: the graphs')")
    build.set_defaults(run=_build)
    profile.set_defaults(run=lambda args: _usage(profile))

    monitor = sub.add_parser("monitor", help="drift of live traffic against the reference profiles")
    mactions = monitor.add_subparsers(metavar="ACTION")
    report = mactions.add_parser("report", help="drift per column and window, from a running server")
    report.add_argument("graph", nargs="?", help="one graph (default: every monitored graph)")
    report.add_argument("--format", choices=("table", "json"), default="table")
    report.add_argument("--plots", type=Path, help="write a PNG per column: reference against live")
    report.add_argument("--window", default="1h", help="the window the plots show (5m or 1h)")
    add_connection_arguments(report)
    report.set_defaults(run=_report)
    monitor.set_defaults(run=lambda args: _usage(monitor))

    feedback = sub.add_parser("feedback", help="ground truth for earlier predictions (live quality)")
    factions = feedback.add_subparsers(metavar="ACTION")
    load = factions.add_parser("load", help="send labels from a CSV/Parquet file to a running server")
    load.add_argument("file", type=Path)
    load.add_argument("--graph", required=True, help="the graph the predictions came from")
    load.add_argument("--id", dest="id_column", required=True, help="the column holding request ids")
    load.add_argument("--label", dest="label_column", required=True, help="the column holding the truth")
    load.add_argument("--row", dest="row_column", help="the column holding the row of a multi-row request")
    load.add_argument(
        "--from",
        dest="logs",
        type=Path,
        help="join against this request log instead of a server (predictions older than its window)",
    )
    load.add_argument("--output", default="score", help="with --from: the served output labels are for")
    load.add_argument("--kind", choices=("binary", "regression"), default="binary", help="with --from")
    load.add_argument("--threshold", type=float, default=0.5, help="with --from: binary decision threshold")
    load.add_argument("--format", choices=("table", "json"), default="table", help="with --from")
    add_connection_arguments(load)
    load.set_defaults(run=_feedback)
    feedback.set_defaults(run=lambda args: _usage(feedback))


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


# -- profile build -----------------------------------------------------------------------------
def _build(args: argparse.Namespace) -> int:
    from engine.errors import GraphInvalid

    path: Path = args.graph / "graph.yaml" if args.graph.is_dir() else args.graph
    try:
        profile, note = asyncio.run(_profile(path, args))
    except GraphInvalid as exc:
        for diagnostic in exc.diagnostics:
            print(diagnostic, file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError) as exc:
        print(f"engine profile build: {exc}", file=sys.stderr)
        return 2
    written = profile.save(path.parent)
    print(
        f"wrote {written} ({len(profile.columns)} columns, {profile.rows} rows from {profile.source}){note}"
    )
    for column in profile.columns:
        shape = f"{column.bins} bins" if column.kind == "numeric" else f"{len(column.values)} values"
        print(f"  {column.name:<28} {column.kind:<12} {shape:<10} nan {column.nan / max(column.rows, 1):.3f}")
    for name, why in profile.skipped.items():
        print(f"  {name:<28} skipped: {why}")
    return 0


async def _profile(path: Path, args: argparse.Namespace) -> tuple[Any, str]:
    from adapters.registry import FeatureCatalog
    from engine.config import read_config_file
    from engine.execution import PlanRunner
    from engine.graph import load_graph
    from engine.monitoring.layout import plan_columns
    from engine.monitoring.profile import build_profile
    from engine.runtimes.onnx import OnnxRuntimeFactory

    config = args.config or _engine_yaml(path.parent)
    sources = read_config_file(config).get("feature_sources", {}) if config is not None else {}
    catalog = FeatureCatalog.from_config(sources)
    runtimes = OnnxRuntimeFactory(max_workers=2)
    try:
        graph = await asyncio.to_thread(load_graph, path, runtimes, catalog)
        plan = graph.plan
        columns = plan_columns(plan)
        collected: dict[str, list[np.ndarray]] = {c.name: [] for c in columns}
        if args.data is not None:
            inputs = _read_data(args.data, plan, columns)
            runner = PlanRunner(plan)
            n = inputs[0].shape[0] if inputs else 0

            def keep(values: Any) -> None:
                for c in columns:
                    if values[c.slot] is not None:
                        collected[c.name].append(_take(values[c.slot], c.index))

            for start in range(0, n, BATCH_ROWS):
                await runner.run([a[start : start + BATCH_ROWS] for a in inputs], tap=keep)
            source, note = args.data.name, ""
        else:
            used, skipped = _from_logs(
                args.logs, args.since, graph.name, graph.version, plan, columns, collected
            )
            if not used:
                raise ValueError(f"no OK records of {graph.name} version {graph.version} in {args.logs}")
            source = f"request log {args.logs.name} ({used} records)"
            note = f"; {skipped} tensors skipped (redacted, hashed or truncated)" if skipped else ""
        graph.close()
    finally:
        runtimes.close()
        await catalog.close()
    return build_profile(graph.name, graph.version, source, collected), note


def _engine_yaml(folder: Path) -> Path | None:
    for candidate in (
        folder / "engine.yaml",
        folder.parent / "engine.yaml",
        folder.parent.parent / "engine.yaml",
    ):
        if candidate.is_file():
            return candidate
    return None


def _take(array: np.ndarray, index: int | None) -> np.ndarray:
    rows = array.reshape(array.shape[0], -1) if array.ndim else array.reshape(1, 1)
    return rows.reshape(-1) if index is None else rows[:, index]


def _read_data(path: Path, plan: Any, columns: list[Any]) -> list[np.ndarray]:
    """The plan's inputs from a CSV/Parquet file: one file column per monitored input column."""
    table = _table(path)
    n = len(next(iter(table.values()), []))
    arrays = []
    for slot, spec in enumerate(plan.inputs):
        names = [c for c in columns if c.slot == slot]
        wanted = [c.name for c in names] if len(names) > 1 or names[0].index is not None else [spec.name]
        missing = [w for w in wanted if w not in table]
        if missing:
            raise ValueError(f"{path.name} has no column {', '.join(missing)} (input '{spec.name}')")
        if spec.datatype.value == "BYTES":
            parts = [np.array([str(v).encode() for v in table[w]], dtype=object) for w in wanted]
        else:
            parts = [np.asarray(table[w], dtype=spec.datatype.numpy_dtype) for w in wanted]
        arrays.append(np.stack(parts, axis=1).reshape(n, *([len(wanted)] if len(spec.shape) > 1 else [])))
    return arrays


def _table(path: Path) -> dict[str, list[Any]]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return {k: list(v) for k, v in pq.read_table(path).to_pydict().items()}
    with path.open(newline="") as file:
        rows = list(csv.DictReader(file))
    if not rows:
        raise ValueError(f"{path.name} has no rows")
    return {k: [_cell(r[k]) for r in rows] for k in rows[0]}


def _cell(text: str) -> Any:
    try:
        return float(text)
    except ValueError:
        return text


def _from_logs(
    logs: Path,
    since: str | None,
    graph: str,
    version: str,
    plan: Any,
    columns: list[Any],
    collected: dict[str, list[np.ndarray]],
) -> tuple[int, int]:
    from engine.graph.reading.durations import seconds
    from engine.observability.log_reader import read_records

    cutoff = ""
    if since is not None:
        window = seconds(since)
        if window is None:
            raise ValueError(f"--since must be a duration such as 1h or 7d, got {since!r}")
        cutoff = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() - window))
    input_names = {slot: spec.name for slot, spec in enumerate(plan.inputs)}
    outputs = {slot: spec.name for spec, slot in zip(plan.outputs, plan.output_slots, strict=True)}
    used = skipped = 0
    for record in read_records(logs):
        if (
            record.get("graph") != graph
            or str(record.get("version")) != version
            or record.get("status") != "OK"
        ):
            continue
        if cutoff and str(record.get("time", "")) < cutoff:
            continue
        used += 1
        for c in columns:
            tensor = _recorded(record, c, input_names, outputs, plan.slot_names[c.slot])
            if tensor is None:
                continue
            array = _array(tensor)
            if array is None:
                skipped += 1
                continue
            collected[c.name].append(_take(array, c.index))
    return used, skipped


def _recorded(
    record: Mapping[str, Any],
    column: Any,
    inputs: Mapping[int, str],
    outputs: Mapping[int, str],
    slot_name: str,
) -> Any:
    """The recorded tensor (``{"datatype", "shape", "data"}``) of ``column``, or None."""
    if column.name.startswith("outputs."):
        return record.get("outputs", {}).get(outputs.get(column.slot, ""))
    if column.slot in inputs:
        return record.get("inputs", {}).get(inputs[column.slot])
    node, _, tensor = slot_name.partition(".")
    fetched = record.get("features", {}).get(node)
    if fetched is not None:
        return fetched.get("values", {}).get(tensor)
    return record.get("nodes", {}).get(node, {}).get("outputs", {}).get(tensor)


def _array(tensor: Mapping[str, Any]) -> np.ndarray | None:
    if "data" not in tensor or tensor.get("truncated"):
        return None
    if tensor.get("datatype") == "BYTES":
        flat = [
            v.encode() if isinstance(v, str) else b""
            for v in np.asarray(tensor["data"], dtype=object).reshape(-1)
        ]
        return np.array(flat, dtype=object).reshape(tensor["shape"])
    return np.asarray(tensor["data"], dtype=np.float64).reshape(tensor["shape"])


# -- feedback load -----------------------------------------------------------------------------
FEEDBACK_CHUNK = 5000


def _feedback(args: argparse.Namespace) -> int:
    from engine.protocol.client import RemoteError
    from engine.protocol.generated.engine.v1 import engine_pb2 as epb

    try:
        table = _table(args.file)
    except (OSError, ValueError) as exc:
        print(f"engine feedback load: {exc}", file=sys.stderr)
        return 2
    for column in (args.id_column, args.label_column, args.row_column):
        if column is not None and column not in table:
            print(f"engine feedback load: {args.file.name} has no column {column!r}", file=sys.stderr)
            return 2
    ids = [_text(v) for v in table[args.id_column]]
    values = table[args.label_column]
    rows = table[args.row_column] if args.row_column else [0] * len(ids)
    if args.logs is not None:
        return _feedback_offline(args, ids, [int(float(r)) for r in rows], [_number(v) for v in values])
    totals = {"matched": 0, "duplicate": 0, "late": 0, "unknown": 0, "invalid": 0}
    client = connect(args)
    try:
        for start in range(0, len(ids), FEEDBACK_CHUNK):
            labels = [
                epb.Label(request_id=i, row=int(float(r)), value=_number(v))
                for i, r, v in zip(
                    ids[start : start + FEEDBACK_CHUNK],
                    rows[start : start + FEEDBACK_CHUNK],
                    values[start : start + FEEDBACK_CHUNK],
                    strict=True,
                )
            ]
            response = client.admin(
                "Feedback", epb.FeedbackRequest(graph=args.graph, labels=labels), epb.FeedbackResponse
            )
            for key in totals:
                totals[key] += getattr(response, key)
    except RemoteError as exc:
        print(f"engine feedback load: {exc.code}: {exc.details}", file=sys.stderr)
        return 1
    finally:
        client.close()
    print(f"{len(ids)} labels sent to {args.graph}: " + ", ".join(f"{v} {k}" for k, v in totals.items()))
    return 0


def _feedback_offline(args: argparse.Namespace, ids: list[str], rows: list[int], values: list[float]) -> int:
    """Join labels to the predictions a request log recorded (the graph's ``--output``), per version."""
    from engine.monitoring.quality import QualityConfig, QualityWindow, join_labels, merge_quality
    from engine.observability.log_reader import read_records

    windows: dict[str, QualityWindow] = {}
    config = QualityConfig(args.output, 0, args.kind, args.threshold)
    skipped = 0
    try:
        for record in read_records(args.logs):
            if record.get("graph") != args.graph or record.get("status") != "OK" or not record.get("id"):
                continue
            tensor = record.get("outputs", {}).get(args.output)
            array = _array(tensor) if isinstance(tensor, dict) else None
            if array is None:
                skipped += 1
                continue
            version = str(record.get("version", ""))
            window = windows.setdefault(version, QualityWindow(args.graph, version, config))
            window.remember(str(record["id"]), array)
    except FileNotFoundError as exc:
        print(f"engine feedback load: no request log at {exc}", file=sys.stderr)
        return 2
    labels = [(i, r, v) for i, r, v in zip(ids, rows, values, strict=True)]
    valid = [
        x for x in labels if x[0] and np.isfinite(x[2]) and (args.kind != "binary" or x[2] in (0.0, 1.0))
    ]
    found = join_labels(list(windows.values()), valid)
    joined = sum(len(v) for v in found.values())
    counts = {k: len(v) for k, v in found.items()}
    counts.update(unknown=len(valid) - joined, invalid=len(labels) - len(valid))
    print(f"{len(labels)} labels joined to {args.logs}: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    if skipped:
        print(f"({skipped} records without a readable '{args.output}': redacted, hashed or truncated)")
    qualities = merge_quality(w.state() for w in windows.values())
    if args.format == "json":
        print(json.dumps([q.to_dict() for q in qualities], indent=1))
        return 0
    for q in qualities:
        shown = "  ".join(f"{k} {'-' if v is None else f'{v:.4f}'}" for k, v in q.metrics.items())
        print(f"{q.graph} version {q.version} ({q.pairs} labelled): {shown}")
    return 0


def _text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")  # counted as invalid by the server


# -- monitor report ----------------------------------------------------------------------------
def _report(args: argparse.Namespace) -> int:
    from engine.protocol.client import RemoteError
    from engine.protocol.generated.engine.v1 import engine_pb2 as epb

    client = connect(args)
    try:
        response = client.admin(
            "MonitorReport", epb.MonitorReportRequest(graph=args.graph or ""), epb.MonitorReportResponse
        )
    except RemoteError as exc:
        print(f"engine monitor report: {exc.code}: {exc.details}", file=sys.stderr)
        return 1
    finally:
        client.close()
    print(response.json if args.format == "json" else response.table)
    if args.plots is not None:
        written = plot_report(json.loads(response.json), args.plots, args.window)
        print(f"wrote {len(written)} plot(s) to {args.plots}", file=sys.stderr)
    return 0


def plot_report(report: Mapping[str, Any], folder: Path, window: str) -> list[Path]:
    """A PNG per column (``GRAPH-VERSION-COLUMN.png``): reference and live shares per bin."""
    try:
        import matplotlib
    except ImportError:
        raise SystemExit(
            "engine monitor report --plots needs matplotlib: pip install 'graph-engine[plots]'"
        ) from None

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for row in _rows(report["drift"], window):
        reference = np.asarray(row["reference"], dtype=float)
        live = np.asarray(row["live"], dtype=float)
        x = np.arange(len(reference))
        fig, ax = plt.subplots(figsize=(7, 3.2))
        ax.bar(x - 0.2, reference / max(reference.sum(), 1), 0.4, label="reference")
        ax.bar(x + 0.2, live / max(live.sum(), 1), 0.4, label=f"live ({window})")
        ax.set_xticks(x, row["labels"], rotation=45, ha="right", fontsize=7)
        psi = "-" if row["psi"] is None else f"{row['psi']:.3f}"
        ax.set_title(
            f"{row['graph']} v{row['version']} {row['column']}: PSI {psi} ({row['rows']} values)", fontsize=9
        )
        ax.set_ylabel("share")
        ax.legend(fontsize=8)
        fig.tight_layout()
        name = (
            f"{row['graph']}-{row['version']}-{row['column']}".replace("/", "_")
            .replace("[", "_")
            .replace("]", "")
        )
        path = folder / f"{name}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
    return written


def _rows(rows: Iterable[Mapping[str, Any]], window: str) -> list[Mapping[str, Any]]:
    return [r for r in rows if r["window"] == window]
