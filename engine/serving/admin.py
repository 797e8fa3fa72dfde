"""``ServerAdmin``: what front doors answer about the server and its graphs, and how they change it.

Views of served graphs (metadata, config, describe, readiness) are read from this worker's
repository: after every state change has reached every worker (below), all workers hold
the same versions. Changes (reload, load, unload) and the numbers that each worker keeps
for itself (statistics, shadow reports, the repository index, the graph list) go through
the control plane to every worker of the server and come back merged, so ``--workers N``
answers as one server (``engine.serving.control``, ``engine.serving.operations``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from engine.errors import Diagnostic, GraphInvalid, GraphNotFound, PermissionDenied
from engine.execution.stats import GraphStats
from engine.graph import check_graph
from engine.graph.values.plan import NodeInfo
from engine.repository import GraphRepository
from engine.serving.control import ControlPlane
from engine.serving.operations import (
    merge_index,
    merge_reload,
    merge_shadows,
    merge_statistics,
    merge_summaries,
)
from engine.serving.state import ServingState
from engine.serving.views import (
    FailedGraphView,
    GraphSummary,
    GraphView,
    IndexRow,
    ReloadOutcome,
    failed_view,
    graph_view,
)
from engine.shadow.report import render_table

NODE_SEPARATOR = "."
"""A graph's node is addressed as the model ``<graph>.<node>`` (Triton's composing models)."""

RELOAD_TIMEOUT_S = 600.0
"""How long a reload waits for every worker (loading and warming up large models takes a while)."""
READ_TIMEOUT_S = 10.0
"""How long statistics, reports and the index wait for every worker."""


@dataclass(frozen=True, slots=True)
class ShadowReportText:
    """A shadow report as JSON (``engine.shadow.ShadowReport``) and as the table people read."""

    json: str
    table: str


class ServerAdmin:
    def __init__(self, repository: GraphRepository, state: ServingState, control: ControlPlane) -> None:
        self.repository = repository
        self.state = state
        self.control = control

    # -- this worker's views -------------------------------------------------------------------
    def model_ready(self, name: str, version: str = "") -> bool:
        return self.state.serving and self.repository.is_ready(name, version)

    def view(self, name: str, version: str = "") -> GraphView:
        """The served version ``version`` ("" = latest) of graph ``name``; NOT_FOUND / UNAVAILABLE."""
        served = self.repository.get(name, version)
        return graph_view(self.repository.entry(name), served)

    def resolve(self, name: str, version: str = "") -> tuple[GraphView, NodeInfo | None]:
        """A graph, or one of its nodes addressed as ``<graph>.<node>``."""
        try:
            return self.view(name, version), None
        except GraphNotFound:
            graph_name, sep, node = name.rpartition(NODE_SEPARATOR)
            if not sep:
                raise
            try:
                view = self.view(graph_name, version)
            except GraphNotFound:
                raise GraphNotFound(name, version) from None
            info = view.node(node)
            if info is None:
                raise GraphNotFound(name, version) from None
            return view, info

    def describe(self, name: str, version: str = "") -> GraphView | FailedGraphView:
        entry = self.repository.entry(name)
        if not entry.versions:
            return failed_view(entry)
        return self.view(name, version)

    async def validate(self, text: str, filename: str, graph_dir: str) -> list[Diagnostic]:
        """Every problem in graph ``text`` as if it were a graph folder of this server's repository."""
        root = self.repository.root.resolve()
        folder = (root / (graph_dir or Path(filename or "graph.yaml").parent.name)).resolve()
        if folder != root and root not in folder.parents:
            raise PermissionDenied("graph_dir must name a folder inside the server's graph repository")
        return await asyncio.to_thread(
            check_graph,
            text,
            filename=filename or "graph.yaml",
            graph_dir=folder,
            runtimes=self.repository.runtimes,
            features=self.repository.features,
        )

    # -- the whole server ----------------------------------------------------------------------
    async def reload(self, names: Sequence[str] = (), *, automatic: bool = False) -> list[ReloadOutcome]:
        """Re-read the named graphs (all when none is named) on every worker. ``automatic`` (polling
        by the reload interval): files are left to settle, and a rejected version is not re-read
        until it changes."""
        answer = await self.control.broadcast(
            "reload", {"names": list(names), "automatic": automatic}, RELOAD_TIMEOUT_S
        )
        return merge_reload(answer)

    async def load(self, name: str) -> None:
        """Load (or reload) one graph on every worker; GraphInvalid when its new version fails."""
        outcomes = await self.reload([name])
        failed = [o for o in outcomes if o.action == "failed" and o.name == name]
        if failed:  # the old version, if any, keeps serving
            diagnostics = self.repository.entry(name).diagnostics if self._known(name) else ()
            if not diagnostics:
                diagnostics = tuple(Diagnostic(name, 1, 1, o.error) for o in failed)
            raise GraphInvalid(name, diagnostics)

    async def unload(self, name: str) -> None:
        self.repository.entry(name)  # NOT_FOUND before anything changes
        answer = await self.control.broadcast("unload", {"name": name}, RELOAD_TIMEOUT_S)
        failure = answer.first_failure()
        if failure is not None:
            failure.raise_failure()

    async def statistics(self, name: str = "") -> list[GraphStats]:
        """Every served version's counters (of graph ``name``, or all), summed over the workers."""
        answer = await self.control.broadcast("stats", {"name": name}, READ_TIMEOUT_S)
        return merge_statistics(answer)

    async def shadow_report(self, graph: str = "") -> ShadowReportText:
        if graph and not self._known(graph):
            raise GraphNotFound(graph, "")
        answer = await self.control.broadcast("shadows", {"graph": graph}, READ_TIMEOUT_S)
        report = merge_shadows(answer)
        return ShadowReportText(report.to_json(), render_table(report))

    async def index(self, *, ready_only: bool = False) -> list[IndexRow]:
        answer = await self.control.broadcast("index", {}, READ_TIMEOUT_S)
        return merge_index(answer, ready_only=ready_only)

    async def graphs(self) -> list[GraphSummary]:
        answer = await self.control.broadcast("index", {}, READ_TIMEOUT_S)
        return merge_summaries(answer)

    def _known(self, name: str) -> bool:
        return any(entry.name == name for entry in self.repository.entries())
