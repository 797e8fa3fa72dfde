"""Read-only views of served graphs that the core hands front doors for metadata answers.

A front door answers ModelMetadata, ModelConfig, DescribeGraph and the repository index
from these values; it never reaches into the repository or the compiled graph. Views of
one version are built on demand (metadata calls are rare next to inference calls).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from engine.errors import Diagnostic
from engine.graph import draw
from engine.graph.values.plan import NodeInfo
from engine.repository import GraphEntry, ServedGraph
from engine.tensors import TensorSpec


@dataclass(frozen=True, slots=True)
class GraphView:
    """One served version of a graph, as metadata and explain answers describe it."""

    name: str
    version: str
    versions: tuple[str, ...]  # every version of the graph that serves, oldest first
    state: str  # READY | FAILED | UNAVAILABLE (of the graph as a whole)
    last_error: str
    description: str
    source_path: Path
    source_sha256: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    output_refs: tuple[str, ...]  # what each output is bound to, as written in graph.yaml
    nodes: tuple[NodeInfo, ...]
    logging_enabled: bool
    logging_sample: float
    mermaid: str
    model_sources: Mapping[str, str] = field(default_factory=dict)  # node -> registry version / URL

    def node(self, name: str) -> NodeInfo | None:
        return next((n for n in self.nodes if n.name == name), None)


@dataclass(frozen=True, slots=True)
class FailedGraphView:
    """A graph with no version serving: why, and where it was read from."""

    name: str
    state: str
    last_error: str
    folder: Path
    diagnostics: tuple[Diagnostic, ...]


@dataclass(frozen=True, slots=True)
class IndexRow:
    """One row of the repository index: a version (or a graph with none) and its state."""

    name: str
    version: str
    state: str
    reason: str


@dataclass(frozen=True, slots=True)
class GraphSummary:
    """One graph in ``ListGraphs``: its latest version, every version, its state."""

    name: str
    latest: str
    state: str
    last_error: str
    versions: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ReloadOutcome:
    """What a reload did to one version (merged over every worker)."""

    name: str
    version: str
    action: str  # loaded | unchanged | unloaded | failed
    error: str = ""


def graph_view(entry: GraphEntry, served: ServedGraph) -> GraphView:
    graph, plan = served.graph, served.graph.plan
    return GraphView(
        name=graph.name,
        version=graph.version,
        versions=tuple(sorted(entry.versions, key=version_key)),
        state=entry.state,
        last_error=entry.last_error,
        description=graph.description,
        source_path=graph.source_path,
        source_sha256=graph.source_sha256,
        inputs=tuple(plan.inputs),
        outputs=tuple(plan.outputs),
        output_refs=tuple(out.ref.text for out in graph.spec.outputs),
        nodes=tuple(plan.nodes),
        logging_enabled=graph.spec.logging.enabled,
        logging_sample=graph.spec.logging.sample,
        mermaid=draw.to_mermaid(plan),
        model_sources=dict(served.sources),
    )


def failed_view(entry: GraphEntry) -> FailedGraphView:
    return FailedGraphView(entry.name, entry.state, entry.last_error, entry.folder, entry.diagnostics)


def version_key(version: str) -> tuple[int, str]:
    """Numbered versions in numeric order, named ones before them."""
    return (int(version), "") if version.isdigit() else (-1, version)
