"""The public entry points: load a graph folder, check graph text, find graph files.

``load_graph`` and ``check_graph`` run the same pipeline, one subpackage per phase: YAML
with positions (``reading.source``) -> ``GraphSpec`` (``reading.graph_reader``) -> ``Analysis``
with models loaded (``checking.validate``) -> ``Plan`` (``compiling.compiler``). Every phase
reports into one ``Report``, so a graph with several problems lists them all at once.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from engine.errors import Diagnostic, GraphInvalid
from engine.graph.checking.model_files import ModelFiles
from engine.graph.checking.validate import analyse
from engine.graph.compiling.compiler import compile_plan
from engine.graph.reading.graph_reader import read_graph
from engine.graph.reading.source import load_yaml
from engine.graph.values.diagnostics import Report
from engine.graph.values.plan import Plan
from engine.graph.values.spec import GraphSpec
from engine.interfaces import (
    MODEL_REFERENCE_PREFIXES,
    FeatureCatalog,
    ModelArtifact,
    ModelRuntime,
    ModelSource,
    RuntimeFactory,
    is_model_reference,
)

GRAPH_FILE = "graph.yaml"


@dataclass(frozen=True)
class CompiledGraph:
    name: str
    version: str
    spec: GraphSpec
    plan: Plan
    models: dict[str, ModelRuntime]  # by model path relative to the graph folder
    source_path: Path
    source_sha256: str
    description: str
    artifacts: dict[str, ModelArtifact] = field(default_factory=dict)  # fetched references, by reference

    def close(self) -> None:
        """Close every model runtime this graph loaded."""
        for runtime in self.models.values():
            runtime.close()


def graph_identity(graph_dir: Path) -> tuple[str, int | None]:
    """(graph name, version folder number or None) for the folder holding a graph.yaml."""
    if graph_dir.name.isdigit() and int(graph_dir.name) > 0:
        return graph_dir.parent.name, int(graph_dir.name)
    return graph_dir.name, None


def _compile(
    text: str,
    filename: str,
    graph_dir: Path,
    runtimes: RuntimeFactory,
    features: FeatureCatalog | None,
    models: ModelSource | None,
) -> tuple[Report, ModelFiles, GraphSpec | None, Plan | None]:
    report = Report(filename)
    files = ModelFiles(graph_dir, runtimes, report, models)
    doc = load_yaml(text, report)
    if doc is None:
        return report, files, None, None
    name, folder_version = graph_identity(graph_dir)
    spec = read_graph(doc, report, file=filename, default_name=name, folder_version=folder_version)
    if spec is None:
        return report, files, None, None
    analysis = analyse(spec, report, files, features)
    if report.has_errors:
        return report, files, spec, None
    return report, files, spec, compile_plan(analysis)


def check_graph(
    text: str,
    *,
    filename: str,
    graph_dir: Path,
    runtimes: RuntimeFactory,
    features: FeatureCatalog | None = None,
    models: ModelSource | None = None,
) -> list[Diagnostic]:
    """Every problem in graph ``text`` (errors and warnings, in file order); [] when it is valid.

    Never raises for a graph problem; closes any model it loaded. ``features`` are the feature
    sources a ``features:`` node may name (none when omitted); ``models`` fetches ``model:`` references
    (registry models, URLs; without it a reference is an error).
    """
    report, files, _, _ = _compile(text, filename, graph_dir, runtimes, features, models)
    files.close_all()
    return report.sorted()


def read_graph_file(path: Path) -> tuple[bytes, str]:
    """A graph file's bytes and its text; GraphInvalid (with the position of the first byte that is
    not UTF-8) when it cannot be read or decoded."""
    name, _ = graph_identity(path.parent)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise GraphInvalid(
            name, [Diagnostic(str(path), 1, 1, f"cannot read graph file: {exc.strerror}")]
        ) from exc
    try:
        return raw, raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        col = len(raw[raw.rfind(b"\n", 0, exc.start) + 1 : exc.start].decode("utf-8", "replace")) + 1
        byte = raw[exc.start]
        message = (
            f"graph file is not UTF-8 text: byte 0x{byte:02x} here is not part of a UTF-8 character "
            "(save the file as UTF-8)"
        )
        raise GraphInvalid(name, [Diagnostic(str(path), line, col, message)]) from exc


def load_graph(
    path: Path,
    runtimes: RuntimeFactory,
    features: FeatureCatalog | None = None,
    models: ModelSource | None = None,
) -> CompiledGraph:
    """Load, validate and compile ``path`` (a graph.yaml); GraphInvalid lists every problem."""
    graph_dir = path.parent
    raw, text = read_graph_file(path)
    report, files, spec, plan = _compile(text, str(path), graph_dir, runtimes, features, models)
    if spec is None or plan is None or report.has_errors:
        files.close_all()
        raise GraphInvalid(graph_identity(graph_dir)[0], report.sorted())
    return CompiledGraph(
        name=spec.name,
        version=spec.version,
        spec=spec,
        plan=plan,
        models=dict(files.loaded),
        source_path=path,
        source_sha256=hashlib.sha256(raw).hexdigest(),
        description=spec.description,
        artifacts=dict(files.artifacts),
    )


def model_references(path: Path) -> list[tuple[str, str | None]]:
    """The ``model:`` references of graph file ``path`` and their ``sha256:`` pins, in file order.

    Read without validating (a reload asks what they name now before deciding to compile): a file
    that does not parse has none, and its load reports why."""
    try:
        text = path.read_text(encoding="utf-8")
        if not any(prefix in text for prefix in MODEL_REFERENCE_PREFIXES):  # most graphs: files only
            return []
        doc = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return []
    nodes = doc.get("nodes") if isinstance(doc, dict) else None
    found: list[tuple[str, str | None]] = []
    for body in nodes.values() if isinstance(nodes, dict) else ():
        model = body.get("model") if isinstance(body, dict) else None
        if isinstance(model, str) and is_model_reference(model):
            pin = body.get("sha256")
            found.append(
                (model, pin.strip().lower().removeprefix("sha256:") if isinstance(pin, str) else None)
            )
    return found


def find_graph_files(root: Path) -> list[Path]:
    """Graph files under a repository root, sorted by name then version.

    ``root/<name>/graph.yaml`` is a graph with one version; ``root/<name>/<N>/graph.yaml``
    (N a positive number) are numbered versions. A folder with both uses the numbered ones.
    """
    found: list[Path] = []
    if not root.is_dir():
        return found
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        versions = sorted(
            (p for p in folder.iterdir() if p.is_dir() and p.name.isdigit() and int(p.name) > 0),
            key=lambda p: int(p.name),
        )
        numbered = [v / GRAPH_FILE for v in versions if (v / GRAPH_FILE).is_file()]
        if numbered:
            found.extend(numbered)
        elif (folder / GRAPH_FILE).is_file():
            found.append(folder / GRAPH_FILE)
    return found
