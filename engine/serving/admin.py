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
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import (
    Diagnostic,
    FailedPrecondition,
    GraphInvalid,
    GraphNotFound,
    InvalidRequest,
    PermissionDenied,
)
from engine.execution.stats import GraphStats
from engine.graph import check_graph
from engine.graph.values.plan import NodeInfo
from engine.monitoring.quality import BINARY, OUTCOMES, merge_feedback
from engine.monitoring.report import MonitorReport, build_report
from engine.monitoring.report import render_table as render_monitor_table
from engine.repository import GraphRepository
from engine.serving.control import Answer, ControlPlane
from engine.serving.operations import (
    merge_drift_states,
    merge_index,
    merge_quality_states,
    merge_reload,
    merge_shadows,
    merge_statistics,
    merge_summaries,
)
from engine.serving.rollout import Rollouts
from engine.serving.rollout_gates import OPERATOR_ACTIONS, merge_counts, operator_transition
from engine.serving.rollout_view import render_status, status_numbers
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
AGREE_ROUNDS = 50
AGREE_WAIT_S = 0.02
"""A rollout's status is read again, this often and at most this many times, until every worker
agrees on it (a transition in flight takes milliseconds to reach them all)."""


@dataclass(frozen=True, slots=True)
class ShadowReportText:
    """A report (shadows: ``engine.shadow.ShadowReport``; monitoring:
    ``engine.monitoring.report.MonitorReport``) as JSON and as the table people read."""

    json: str
    table: str


class ServerAdmin:
    def __init__(
        self,
        repository: GraphRepository,
        state: ServingState,
        control: ControlPlane,
        rollouts: Rollouts | None = None,
    ) -> None:
        self.repository = repository
        self.state = state
        self.control = control
        self.rollouts = rollouts

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
            models=self.repository.models,
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
        quality = await self.control.broadcast("quality", {"graph": graph}, READ_TIMEOUT_S)
        data, table = report.to_dict(), render_table(report)
        labelled = [
            (q, name, shadow) for q in merge_quality_states(quality) for name, shadow in q.shadows.items()
        ]
        if labelled:  # the candidates' live quality from label feedback (graphs with `quality:`)
            data["quality"] = [
                {"graph": q.graph, "version": q.version, "shadow": name, **shadow.to_dict()}
                for q, name, shadow in labelled
            ]
            lines = [
                "",
                "live quality from labels (the candidate and its live target on the same labelled rows):",
            ]
            for q, name, shadow in labelled:
                lines.append(f"  {q.graph} v{q.version} {name} ({shadow.pairs} rows)")
                for side, numbers in (("candidate", shadow.candidate), ("live", shadow.live)):
                    shown = "  ".join(f"{k} {'-' if v is None else f'{v:.4f}'}" for k, v in numbers.items())
                    lines.append(f"    {side:<9} {shown}")
            table += "\n".join(lines)
        return ShadowReportText(json.dumps(data, sort_keys=True), table)

    async def monitor_report(self, graph: str = "") -> ShadowReportText:
        """``drift`` as JSON and as the table ``engine monitor report`` prints."""
        report = await self.drift(graph)
        return ShadowReportText(report.to_json(), render_monitor_table(report))

    async def drift(self, graph: str = "") -> MonitorReport:
        """Drift of every monitored version (of ``graph``, or all), counts summed over the workers."""
        if graph and not self._known(graph):
            raise GraphNotFound(graph, "")
        answer = await self.control.broadcast("drift", {"graph": graph}, READ_TIMEOUT_S)
        profiles = {(d.graph, d.version): d.profile for d in self.repository.drifts()}
        quality = await self.control.broadcast("quality", {"graph": graph}, READ_TIMEOUT_S)
        return build_report(merge_drift_states(answer), profiles, merge_quality_states(quality))

    async def feedback(self, graph: str, labels: Sequence[tuple[str, int, float]]) -> dict[str, int]:
        """Attach ground truth to earlier predictions of ``graph`` by request id (and row), on every
        worker: the one that served a request joins its label. Returns the labels by outcome:
        matched, duplicate (labelled before, or twice here), late (the prediction left the window),
        unknown (no worker served that id, or it had none), invalid (not a finite number; binary
        graphs: not 0 or 1)."""
        windows = self.repository.quality_windows(graph) if self._known(graph) else None
        if windows is None:
            raise GraphNotFound(graph, "")
        if not windows and not self.repository.monitoring:
            raise FailedPrecondition(
                "monitoring is off on this server (--monitoring false): no labels are kept"
            )
        if not windows:
            raise FailedPrecondition(
                f"graph '{graph}' takes no labels: give it 'quality: {{output: NAME}}' (docs/monitoring.md)"
            )
        binary = windows[0].config.kind == BINARY
        counts = dict.fromkeys(OUTCOMES, 0)
        seen: set[tuple[str, int]] = set()
        valid: list[list[Any]] = []
        for request_id, row, label in labels:
            if not math.isfinite(label) or (binary and label not in (0.0, 1.0)) or not request_id:
                counts["invalid"] += 1
            elif (request_id, row) in seen:
                counts["duplicate"] += 1
            else:
                seen.add((request_id, row))
                valid.append([request_id, row, label])
        answer = await self.control.broadcast("feedback", {"graph": graph, "labels": valid}, READ_TIMEOUT_S)
        joined = merge_feedback(list(answer.values()), len(valid))
        here = {"invalid": counts["invalid"], "duplicate": counts["duplicate"], "unknown": joined["unknown"]}
        for outcome in ("matched", "duplicate", "late", "unknown"):
            counts[outcome] += joined[outcome]
        for outcome, count in here.items():  # what only this worker saw, counted once for the server
            windows[0].counts[outcome] += count
        return counts

    async def index(self, *, ready_only: bool = False) -> list[IndexRow]:
        answer = await self.control.broadcast("index", {}, READ_TIMEOUT_S)
        return merge_index(answer, ready_only=ready_only)

    async def graphs(self) -> list[GraphSummary]:
        answer = await self.control.broadcast("index", {}, READ_TIMEOUT_S)
        return merge_summaries(answer)

    async def rollout(self, graph: str, action: str = "status") -> ShadowReportText:
        """A graph's rollout (``status``), or an operator's ``pause | resume | promote | abort`` of it
        carried to every worker; the view as JSON and as the text ``engine rollout`` prints."""
        if not self._known(graph):
            raise GraphNotFound(graph, "")
        if action != "status" and action not in OPERATOR_ACTIONS:
            raise InvalidRequest(
                f"rollout action must be status, {', '.join(OPERATOR_ACTIONS)}; got '{action}'"
            )
        if self.rollouts is None:
            raise FailedPrecondition(f"graph '{graph}' has no rollout")
        rollout = self.rollouts.require(graph)
        if action != "status":
            args = operator_transition(rollout, action)
            await self.control.broadcast("rollout", {"action": "apply", **args}, RELOAD_TIMEOUT_S)
        views = await self._agreed_views(graph)
        judged = [
            v for v in views.values() if v.get("judge") and v.get("graph")
        ]  # the deciding process's view:
        view = dict(judged[0] if judged else self.rollouts.view(graph))  # its events are the whole server's
        view.pop("judge", None)
        answer = await self.control.broadcast("rollout", {"action": "counts"}, READ_TIMEOUT_S)
        view["numbers"] = status_numbers(merge_counts(answer.values(), self.rollouts.windows()).get(graph))
        return ShadowReportText(json.dumps(view, sort_keys=True), render_status(view))

    async def _agreed_views(self, graph: str) -> Answer:
        """Every worker's view of ``graph``'s rollout, read again while they differ on where it
        stands: a transition reaches the workers one by one, and the status reported must be the
        one every worker routes by (for a few milliseconds, one may still route the old way)."""
        for _ in range(AGREE_ROUNDS):
            views = await self.control.broadcast(
                "rollout", {"action": "view", "graph": graph}, READ_TIMEOUT_S
            )
            stands = {
                (v.get("candidate"), v.get("status"), v.get("step")) for v in views.values() if v.get("graph")
            }
            if len(stands) <= 1:
                break
            await asyncio.sleep(AGREE_WAIT_S)
        return views

    def _known(self, name: str) -> bool:
        return any(entry.name == name for entry in self.repository.entries())
