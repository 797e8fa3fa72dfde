"""``engine validate``'s schema checks: graph.yaml against the graph schema, engine.yaml against the
settings schema (the JSON Schemas published in ``schemas/``, built from the same declarations).

The readers stay the authority on a graph: their messages are more precise. A graph they accept
that the schema refuses is reported as a warning (an editor using the schema would flag it, so
the two disagree and one needs fixing). An engine.yaml is checked against its schema with the
line and column of each problem.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from engine.errors import Diagnostic


def _validator(schema: dict[str, Any]) -> Any:
    import jsonschema

    return jsonschema.Draft202012Validator(schema)


def _problems(data: object, schema: dict[str, Any]) -> Iterable[tuple[tuple[str | int, ...], bool, str]]:
    """(path, whether the path names a key, message) for every violation."""
    from engine.graph.values.diagnostics import did_you_mean

    for error in _validator(schema).iter_errors(data):
        best = error
        if error.context:  # an anyOf: the branch that got furthest says the most
            best = max(error.context, key=lambda e: len(e.absolute_path))
        path = tuple(best.absolute_path)
        if best.validator == "additionalProperties" and isinstance(best.instance, dict):
            known = list(best.schema.get("properties", {}))
            for key in best.instance:
                if key not in known:
                    yield (*path, key), True, f"unknown key '{key}'{did_you_mean(str(key), known)}"
            continue
        where = ".".join(map(str, path)) or "the file"
        yield path, False, f"{where}: {best.message}"


def graph_schema_warnings(text: str, filename: str) -> list[Diagnostic]:
    """Where a graph the readers accept breaks ``schemas/graph.schema.json``."""
    from engine.graph.reading.source import load_yaml
    from engine.graph.schema import graph_schema
    from engine.graph.values.diagnostics import Report

    doc = load_yaml(text, Report(filename))
    if doc is None:
        return []
    found = []
    for path, is_key, message in _problems(doc.data, graph_schema()):
        pos = doc.positions.key(path) if is_key else doc.positions.value(path)
        found.append(
            Diagnostic(filename, pos.line, pos.col, f"{message} (schemas/graph.schema.json)", "warning")
        )
    return sorted(found, key=lambda d: (d.line, d.col))


def config_schema_errors(path: Path) -> list[Diagnostic]:
    """Every place an engine.yaml breaks ``schemas/engine.schema.json``, with line:col."""
    from engine.config.schema import engine_schema
    from engine.graph.reading.source import load_yaml
    from engine.graph.values.diagnostics import Report

    report = Report(str(path))
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return [Diagnostic(str(path), 1, 1, f"cannot read the config file: {exc}")]
    doc = load_yaml(text, report)
    if doc is None:
        return [d for d in report.sorted() if "graph file is empty" not in d.message]
    found = []
    for where, is_key, message in _problems(doc.data, engine_schema()):
        pos = doc.positions.key(where) if is_key else doc.positions.value(where)
        found.append(Diagnostic(str(path), pos.line, pos.col, message))
    return sorted(found, key=lambda d: (d.line, d.col))
