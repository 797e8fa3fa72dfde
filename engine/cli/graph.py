"""The local graph commands: ``validate`` (every problem with file:line:col) and ``graph draw``.

Both check ``features`` nodes against the feature sources the server would have (``features.py``
finds the config the same way for both).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from engine.cli.features import close_catalog, find_config, load_catalog
from engine.cli.run import add_arguments as add_run_arguments
from engine.cli.run import run_command
from engine.cli.schemas import config_schema_errors, graph_schema_warnings

if TYPE_CHECKING:
    from engine.registry import ModelSources


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``validate`` and ``graph draw`` to the ``engine`` command's subparsers."""
    validate = sub.add_parser("validate", help="check graphs and print every problem with file:line:col")
    validate.add_argument(
        "paths", type=Path, nargs="+", help="graph.yaml files, graph folders or repositories"
    )
    validate.add_argument(
        "--config",
        type=Path,
        help="engine.yaml declaring the feature sources graphs name (default: ENGINE_CONFIG, else an "
        "engine.yaml in or above the graph folders)",
    )
    validate.set_defaults(run=_validate)

    graph = sub.add_parser("graph", help="work with one graph locally")
    graph_sub = graph.add_subparsers(metavar="ACTION")
    draw = graph_sub.add_parser("draw", help="draw a graph as mermaid, dot, svg or png")
    draw.add_argument("graph", help="a graph folder, a graph.yaml, or a graph name under --graphs")
    draw.add_argument("--graphs", type=Path, default=Path("graphs"))
    draw.add_argument(
        "--format",
        choices=("mermaid", "dot", "svg", "png"),
        default="mermaid",
        help="svg is drawn by the engine itself; png needs graphviz's dot (default: mermaid)",
    )
    draw.add_argument("--output", "-o", type=Path, help="file to write (required for png)")
    draw.add_argument("--config", type=Path, help="engine.yaml declaring feature sources")
    draw.set_defaults(run=_draw)
    run = graph_sub.add_parser(
        "run", help="run a graph in this process (no server) and print each node's outputs and timing"
    )
    add_run_arguments(run)
    run.set_defaults(run=run_command)


def _graph_files(paths: Sequence[Path]) -> list[Path]:
    from engine.graph import find_graph_files

    files: list[Path] = []
    for path in paths:
        if path.is_file():
            files.append(path)
        elif (path / "graph.yaml").is_file():
            files.append(path / "graph.yaml")
        elif path.is_dir():
            files.extend(find_graph_files(path))
        else:
            raise FileNotFoundError(path)
    return files


def model_sources(config: Path | None) -> ModelSources:
    """The model sources a server with ``config`` would have (its ``model_registry`` and ``model_cache``)."""
    from engine.config.settings import read_config_file
    from engine.registry import ModelSources
    from engine.server import model_cache_dir

    found = read_config_file(config) if config is not None else {}
    return ModelSources.from_config(
        found.get("model_registry", {}), model_cache_dir(found.get("model_cache", ""))
    )


def _validate(args: argparse.Namespace) -> int:
    from engine.errors import GraphInvalid
    from engine.graph import check_graph
    from engine.graph.loader import read_graph_file
    from engine.runtimes.onnx import OnnxRuntimeFactory

    try:
        files = _graph_files(args.paths)
    except FileNotFoundError as exc:
        print(f"engine validate: no such file or folder: {exc}", file=sys.stderr)
        return 2
    if not files:
        print("engine validate: no graph.yaml found", file=sys.stderr)
        return 2
    config = find_config(args.config, args.paths)
    config_problems = config_schema_errors(config) if config is not None and config.is_file() else []
    for diagnostic in config_problems:
        print(diagnostic)
    if config_problems:
        print(f"engine validate: {config} does not fit schemas/engine.schema.json", file=sys.stderr)
        return 1
    try:
        catalog = load_catalog(config, args.paths)
    except ValueError as exc:
        print(f"engine validate: {exc}", file=sys.stderr)
        return 2
    try:
        models = model_sources(find_config(args.config, args.paths))
    except ValueError as exc:
        print(f"engine validate: {exc}", file=sys.stderr)
        close_catalog(catalog)
        return 2
    runtimes = OnnxRuntimeFactory(max_workers=1)
    errors = warnings = 0
    try:
        for file in files:
            try:
                _, text = read_graph_file(file)
            except GraphInvalid as exc:  # unreadable or not UTF-8: say so, go on with the others
                for diagnostic in exc.diagnostics:
                    print(diagnostic)
                errors += len(exc.diagnostics)
                continue
            diagnostics = check_graph(
                text,
                filename=str(file),
                graph_dir=file.parent,
                runtimes=runtimes,
                features=catalog,
                models=models,
            )
            if not any(d.severity == "error" for d in diagnostics):
                diagnostics += graph_schema_warnings(text, str(file))
            for diagnostic in diagnostics:
                print(diagnostic)
            file_errors = sum(d.severity == "error" for d in diagnostics)
            errors += file_errors
            warnings += len(diagnostics) - file_errors
            if not file_errors:
                print(f"{file}: ok")
    finally:
        runtimes.close()
        models.close()
        close_catalog(catalog)
    print(f"{len(files)} graph(s) checked: {errors} error(s), {warnings} warning(s)")
    return 1 if errors else 0


def _draw(args: argparse.Namespace) -> int:
    from engine.errors import GraphInvalid
    from engine.graph import draw, load_graph
    from engine.runtimes.onnx import OnnxRuntimeFactory

    path = Path(args.graph)
    if not path.exists():
        path = args.graphs / args.graph
    if path.is_dir():
        path = path / "graph.yaml"
    if not path.is_file():
        print(f"engine graph draw: no graph at {path}", file=sys.stderr)
        return 2
    try:
        catalog = load_catalog(find_config(args.config, [path]), [path])
    except ValueError as exc:
        print(f"engine graph draw: {exc}", file=sys.stderr)
        return 2
    runtimes = OnnxRuntimeFactory(max_workers=1, warmup_runs=1)
    try:
        models = model_sources(find_config(args.config, [path]))
        graph = load_graph(path, runtimes, catalog, models)
        models.close()
    except ValueError as exc:
        print(f"engine graph draw: {exc}", file=sys.stderr)
        return 2
    except GraphInvalid as exc:
        for diagnostic in exc.diagnostics:
            print(diagnostic, file=sys.stderr)
        return 1
    finally:
        runtimes.close()
        close_catalog(catalog)
    drawers = {"mermaid": draw.to_mermaid, "svg": draw.to_svg}
    text = drawers.get(args.format, draw.to_dot)(graph.plan)
    if args.format == "png":
        return _png(text, args.output)
    if args.output:
        args.output.write_text(text)
        print(f"wrote {args.output}")
    else:
        print(text)
    return 0


def _png(text: str, output: Path | None) -> int:
    """Render a dot drawing to PNG with graphviz's ``dot``."""
    dot = shutil.which("dot")
    if dot is None:
        print(
            "engine graph draw: --format png needs graphviz's `dot` (apt-get install graphviz, "
            "brew install graphviz); --format svg needs nothing",
            file=sys.stderr,
        )
        return 2
    if output is None:
        print("engine graph draw: --format png needs --output FILE", file=sys.stderr)
        return 2
    subprocess.run([dot, "-Tpng", "-o", str(output)], input=text.encode(), check=True)
    print(f"wrote {output}")
    return 0
