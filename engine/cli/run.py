"""``engine graph run``: run a graph in this process, without a server, and print what each node did.

The graph is loaded exactly as the server loads it (validated, models in onnxruntime, feature
sources from the server config or ``--features-from`` files), run once on the given rows, and
printed as ``engine explain`` prints a served call: the per-node table, then the outputs.
Shadows are compiled but not run (``engine shadow replay`` compares candidates offline).

Inputs come from ``--input NAME=JSON`` (a whole tensor, as ``engine infer`` takes it) or from
``--inputs-file`` holding rows: a JSON object of ``name -> tensor``, a JSON array of row objects,
JSON Lines, CSV (a cell holds a number, text or a JSON list) or Parquet.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.cli import tables
from engine.cli.features import close_catalog, find_config, load_catalog

if TYPE_CHECKING:
    from adapters.registry import FeatureCatalog
    from engine.tensors import TensorSpec

PROG = "engine graph run"


class UsageError(Exception):
    """Inputs or options the run cannot use; printed as ``engine graph run: …`` with exit code 2."""


def add_arguments(run: argparse.ArgumentParser) -> None:
    run.add_argument("graph", help="a graph folder, a graph.yaml, or a graph name under --graphs")
    run.add_argument("--graphs", type=Path, default=Path("graphs"))
    run.add_argument(
        "--input",
        "-i",
        action="append",
        default=[],
        metavar="NAME=JSON",
        help="an input as JSON, e.g. amount=[[1200.0]]; repeat per input",
    )
    run.add_argument(
        "--inputs-file",
        type=Path,
        help="rows of inputs: .json (an object of tensors or an array of rows), .jsonl, .csv, .parquet",
    )
    run.add_argument(
        "--features-from",
        action="append",
        default=[],
        metavar="[SOURCE=]FILE",
        help="serve a feature source from a CSV/Parquet/JSON file keyed by its first column "
        "(without SOURCE=: every source the graph reads); repeatable",
    )
    run.add_argument("--config", type=Path, help="engine.yaml declaring the feature sources")
    run.add_argument(
        "--format",
        choices=("table", "json"),
        default="table",
        help="table: the per-node table and the outputs; json: the outputs only",
    )


def run_command(args: argparse.Namespace) -> int:
    from engine.errors import EngineError, GraphInvalid
    from engine.graph import load_graph
    from engine.runtimes.onnx import OnnxRuntimeFactory

    path = graph_file(args.graph, args.graphs)
    if path is None:
        print(f"{PROG}: no graph at {args.graph} (nor under {args.graphs})", file=sys.stderr)
        return 2
    try:
        catalog = _catalog(args, path)
    except (ValueError, OSError, UsageError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    runtimes = OnnxRuntimeFactory(max_workers=1, warmup_runs=1)
    try:
        try:
            graph = load_graph(path, runtimes, catalog)
        except GraphInvalid as exc:
            for diagnostic in exc.diagnostics:
                print(diagnostic, file=sys.stderr)
            return 1
        try:
            arrays = input_arrays(graph.plan.inputs, args.input, args.inputs_file)
            outputs, rows, total_ns = asyncio.run(_run(graph.plan, arrays))
        except UsageError as exc:
            print(f"{PROG}: {exc}", file=sys.stderr)
            return 2
        except EngineError as exc:
            print(f"{PROG}: {exc}", file=sys.stderr)
            return 1
        finally:
            graph.close()
    finally:
        runtimes.close()
        close_catalog(catalog)
    if args.format == "json":
        print(tables.outputs_json(outputs))
        return 0
    n = len(next(iter(arrays.values()))) if arrays else 0
    print(
        f"graph {graph.name} version {graph.version}: {n} row(s), "
        f"{tables.duration(total_ns)} in the executor\n"
    )
    print(tables.node_table(rows))
    print("\noutputs:", tables.outputs_json(outputs))
    return 0


def graph_file(name: str, graphs: Path) -> Path | None:
    """The graph.yaml that ``name`` (a file, a folder, or a graph under ``graphs``) means."""
    path = Path(name)
    if not path.exists():
        path = graphs / name
    if path.is_dir():
        path = path / "graph.yaml"
    return path if path.is_file() else None


async def _run(
    plan: Any, arrays: Mapping[str, np.ndarray]
) -> tuple[dict[str, np.ndarray], list[tables.NodeRow], int]:
    import time

    from engine.execution import PlanRunner
    from engine.interfaces import FEATURE_STATUS_NAMES, NodeEvent

    events: list[NodeEvent] = []

    class Collector:
        def on_node(self, event: NodeEvent) -> None:
            events.append(event)

    runner = PlanRunner(plan)
    t0 = time.perf_counter_ns()
    result = await runner.run([arrays[spec.name] for spec in plan.inputs], observer=Collector())
    total_ns = time.perf_counter_ns() - t0
    outputs = {
        spec.name: array for spec, array in zip(plan.outputs, result, strict=True) if array is not None
    }
    rows = [
        tables.NodeRow(
            name=e.node,
            kind=e.kind,
            start_ns=e.start_ns,
            duration_ns=e.duration_ns,
            rows=e.rows,
            outputs=e.outputs,
            branch_rows=e.branch or {},
            feature_status={
                name: ",".join(FEATURE_STATUS_NAMES[int(s)] for s in statuses.tolist())
                for name, statuses in (e.feature_status or {}).items()
            },
            error=e.error or "",
        )
        for e in events
    ]
    return outputs, rows, total_ns


# --- inputs ---------------------------------------------------------------------------------


def input_arrays(
    specs: Sequence[TensorSpec], items: Sequence[str], inputs_file: Path | None
) -> dict[str, np.ndarray]:
    """The graph's inputs, one array per declared input, checked against its declaration."""
    from engine.protocol.client import to_array

    if inputs_file is not None and items:
        raise UsageError("give --input or --inputs-file, not both")
    declared = {spec.name: spec for spec in specs}
    values = _parse_items(items) if inputs_file is None else _read_file(inputs_file, declared)
    unknown = [name for name in values if name not in declared]
    if unknown:
        raise UsageError(
            f"the graph has no input {', '.join(repr(n) for n in unknown)} (inputs: {', '.join(declared)})"
        )
    missing = [name for name in declared if name not in values]
    if missing:
        raise UsageError(f"missing input(s) {', '.join(repr(n) for n in missing)}")
    arrays: dict[str, np.ndarray] = {}
    for name, spec in declared.items():
        try:
            array = to_array(values[name], spec.datatype)
        except ValueError as exc:
            raise UsageError(f"input '{name}': {exc}") from None
        if inputs_file is not None:
            array = _fit_rank(array, spec)
        if not spec.accepts_shape(tuple(array.shape)):
            shape = ", ".join(str(d) for d in array.shape)
            raise UsageError(f"input '{name}': shape [{shape}] does not fit the declared {spec.shape_text()}")
        arrays[name] = array
    return arrays


def _fit_rank(array: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """Rows of scalars for an input declared ``[-1, 1]`` become one column."""
    missing = len(spec.shape) - array.ndim
    if missing > 0 and all(d in (1, -1) for d in spec.shape[array.ndim :]):
        return array.reshape(array.shape + (1,) * missing)
    return array


def _parse_items(items: Sequence[str]) -> dict[str, object]:
    values: dict[str, object] = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep:
            raise UsageError(f"--input {item!r}: expected NAME=JSON")
        try:
            values[name] = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UsageError(f"--input {name}: not JSON ({exc.msg})") from None
    return values


def _read_file(path: Path, declared: Mapping[str, TensorSpec]) -> dict[str, object]:
    """Name -> nested list, from a file of tensors (a JSON object) or of rows (every other form)."""
    if not path.is_file():
        raise UsageError(f"no such inputs file: {path}")
    suffix = path.suffix.lower()
    rows: list[Mapping[str, object]]
    try:
        if suffix == ".json":
            document = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(document, dict):
                return dict(document)
            if not isinstance(document, list):
                raise UsageError(f"{path}: expected an object of tensors or an array of rows")
            rows = document
        elif suffix in (".jsonl", ".ndjson"):
            lines = path.read_text(encoding="utf-8").splitlines()
            rows = [json.loads(line) for line in lines if line.strip()]
        elif suffix == ".csv":
            with path.open(newline="", encoding="utf-8") as handle:
                rows = [{k: _cell(v, declared.get(k)) for k, v in r.items()} for r in csv.DictReader(handle)]
        elif suffix in (".parquet", ".pq"):
            try:
                import pyarrow.parquet as pq
            except ImportError:
                raise UsageError("reading Parquet needs pyarrow: pip install 'engine[parquet]'") from None
            rows = pq.read_table(path).to_pylist()
        else:
            raise UsageError(f"{path}: expected a .json, .jsonl, .csv or .parquet file")
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}:{exc.lineno}:{exc.colno}: not JSON ({exc.msg})") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not UTF-8 text") from None
    if not all(isinstance(r, Mapping) for r in rows):
        raise UsageError(f"{path}: every row must be an object of input values")
    present = {name for r in rows for name in r}
    columns: dict[str, object] = {name: [r.get(name) for r in rows] for name in declared if name in present}
    columns.update((name, []) for name in present if name not in declared)  # reported as unknown
    return columns


def _cell(text: str | None, spec: TensorSpec | None) -> object:
    """A CSV cell: text for a BYTES input, else a JSON value (a number, a list) or the text."""
    if text is None or (spec is not None and spec.datatype.value == "BYTES"):
        return text
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


# --- feature files --------------------------------------------------------------------------


def _catalog(args: argparse.Namespace, path: Path) -> FeatureCatalog:
    """The server config's feature sources, with ``--features-from`` files put in their place."""
    from adapters.registry import FeatureCatalog
    from adapters.static import StaticSource, read_records

    catalog = load_catalog(find_config(args.config, [path]), [path])
    if not args.features_from:
        return catalog
    overrides: dict[str, Path] = {}
    for item in args.features_from:
        name, sep, file = item.rpartition("=")
        targets = [name] if sep else _sources_read(path)
        if not targets:
            raise UsageError(f"--features-from {item}: the graph reads no feature source")
        for target in targets:
            overrides[target] = Path(file)
    sources = {name: catalog.get(name) for name in catalog.names()}
    replaced = [s for n, s in sources.items() if n in overrides and s is not None]
    for name, file in overrides.items():
        if not file.is_file():
            raise UsageError(f"--features-from: no such file: {file}")
        records = read_records(file)
        if not records:
            raise UsageError(f"--features-from {file}: the file has no rows")
        key_column = next(iter(records[0]))
        configured = catalog.get(name)
        schema = configured.schema() if configured is not None else None
        sources[name] = StaticSource(name, file, key_column=key_column, schema=schema)
    close_catalog(FeatureCatalog({str(i): s for i, s in enumerate(replaced)}))
    return FeatureCatalog({n: s for n, s in sources.items() if s is not None})


def _sources_read(path: Path) -> list[str]:
    """The feature sources a graph's ``features:`` nodes name (read from its YAML as data)."""
    import yaml

    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError):
        return []
    nodes = document.get("nodes") if isinstance(document, dict) else None
    if not isinstance(nodes, dict):
        return []
    names = [str(n["features"]) for n in nodes.values() if isinstance(n, dict) and "features" in n]
    return sorted(set(names))
