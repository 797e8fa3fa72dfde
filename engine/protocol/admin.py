"""``engine.v1.Engine``: our admin service — list, describe, validate, explain, reload."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import grpc

from engine.errors import GraphNotFound, InvalidRequest, PermissionDenied
from engine.graph import check_graph, draw
from engine.graph.plan import NodeInfo
from engine.interfaces import FEATURE_STATUS_NAMES, NodeEvent
from engine.protocol import codec
from engine.protocol.auth import ADMIN
from engine.protocol.generated.engine.v1 import engine_pb2 as epb
from engine.protocol.handlers import generic_handler
from engine.protocol.inference import ServerState, decode_request, encode_answer
from engine.repository import GraphRepository
from engine.shadow.report import render_table
from engine.tensors import TensorSpec

SERVICE = "engine.v1.Engine"


class _Collector:
    def __init__(self) -> None:
        self.events: list[NodeEvent] = []

    def on_node(self, event: NodeEvent) -> None:
        self.events.append(event)


def _tensor_info(spec: TensorSpec) -> epb.TensorInfo:
    return epb.TensorInfo(name=spec.name, datatype=spec.datatype.value, shape=list(spec.shape))


def _source_of(ref: str) -> str:
    head, _, _ = ref.partition(".")
    return head


def edges(nodes: tuple[NodeInfo, ...], outputs: dict[str, str]) -> list[epb.Edge]:
    found = []
    for node in nodes:
        found.extend(epb.Edge(source=_source_of(ref), target=node.name, tensor=ref) for ref in node.inputs)
        found.extend(epb.Edge(source=node.name, target=branch, tensor="") for branch in node.branches)
    found.extend(
        epb.Edge(source=_source_of(ref), target="outputs", tensor=name) for name, ref in outputs.items()
    )
    return found


class AdminService:
    def __init__(
        self,
        repository: GraphRepository,
        state: ServerState,
        log_counters: Callable[[], Mapping[str, int]] | None = None,
    ) -> None:
        self.repository = repository
        self.state = state
        self.log_counters = log_counters  # the request log's written/dropped/failed/pending

    async def list_graphs(self, request: epb.ListGraphsRequest, context) -> epb.ListGraphsResponse:  # type: ignore[no-untyped-def]
        graphs = [
            epb.GraphSummary(
                name=entry.name,
                version=entry.latest,
                state=entry.state,
                last_error=entry.last_error,
                versions=sorted(entry.versions),
            )
            for entry in self.repository.entries()
        ]
        return epb.ListGraphsResponse(graphs=graphs)

    async def describe_graph(self, request: epb.DescribeGraphRequest, context) -> epb.DescribeGraphResponse:  # type: ignore[no-untyped-def]
        entry = self.repository.entry(request.name)
        if not entry.versions:
            return epb.DescribeGraphResponse(
                name=entry.name, state=entry.state, last_error=entry.last_error, source_path=str(entry.folder)
            )
        served = self.repository.get(request.name, request.version)
        graph, plan = served.graph, served.graph.plan
        outputs = {spec.name: ref for spec, ref in zip(plan.outputs, _output_refs(graph), strict=True)}
        return epb.DescribeGraphResponse(
            name=graph.name,
            version=graph.version,
            state=entry.state,
            last_error=entry.last_error,
            source_path=str(graph.source_path),
            description=graph.description,
            inputs=[_tensor_info(s) for s in plan.inputs],
            outputs=[_tensor_info(s) for s in plan.outputs],
            nodes=[
                epb.Node(
                    name=n.name,
                    kind=n.kind,
                    detail=n.detail,
                    inputs=list(n.inputs),
                    outputs=[_tensor_info(s) for s in n.outputs],
                    branches=list(n.branches),
                    model_path=n.model_path or "",
                    model_sha256=n.model_sha256 or "",
                )
                for n in plan.nodes
            ],
            edges=edges(plan.nodes, outputs),
            mermaid=draw.to_mermaid(plan),
            request_log=epb.RequestLogCounters(**self.log_counters()) if self.log_counters else None,
            logging_enabled=graph.spec.logging.enabled,
            logging_sample=graph.spec.logging.sample,
        )

    async def validate_graph(self, request: epb.ValidateGraphRequest, context) -> epb.ValidateGraphResponse:  # type: ignore[no-untyped-def]
        root = self.repository.root.resolve()
        folder = (root / (request.graph_dir or Path(request.filename or "graph.yaml").parent.name)).resolve()
        if folder != root and root not in folder.parents:
            raise PermissionDenied("graph_dir must name a folder inside the server's graph repository")
        diagnostics = await asyncio.to_thread(
            check_graph,
            request.yaml,
            filename=request.filename or "graph.yaml",
            graph_dir=folder,
            runtimes=self.repository.runtimes,
            features=self.repository.features,
        )
        return epb.ValidateGraphResponse(
            ok=not any(d.severity == "error" for d in diagnostics),
            diagnostics=[
                epb.Diagnostic(file=d.file, line=d.line, col=d.col, severity=d.severity, message=d.message)
                for d in diagnostics
            ],
        )

    async def explain(
        self, request: epb.ExplainRequest, context: grpc.aio.ServicerContext
    ) -> epb.ExplainResponse:
        self.state.check_ready()
        infer = request.request
        if not infer.model_name:
            raise InvalidRequest("explain needs request.model_name")
        served = self.repository.get(infer.model_name, infer.model_version)
        await self.state.admission.acquire(context.time_remaining())  # explain is inference work too
        try:
            return await self._explain(served, request, context)
        finally:
            self.state.admission.release()

    async def _explain(self, served, request: epb.ExplainRequest, context) -> epb.ExplainResponse:  # type: ignore[no-untyped-def]
        infer = request.request
        inputs, wanted, deadline = decode_request(served, infer, context, self.state.limits)
        collector = _Collector()
        t0 = time.perf_counter_ns()
        outputs = await served.runner.run(list(inputs.values()), deadline=deadline, observer=collector)
        total = time.perf_counter_ns() - t0
        response = encode_answer(served, infer.id, outputs, wanted, raw=False)
        traces = []
        for event in collector.events:
            trace = epb.NodeTrace(
                name=event.node,
                kind=event.kind,
                start_ns=event.start_ns,
                duration_ns=event.duration_ns,
                rows=event.rows,
                error=event.error or "",
            )
            if request.include_tensors:
                trace.inputs.extend(codec.encode_tensor(n, a) for n, a in event.inputs.items())
                trace.outputs.extend(codec.encode_tensor(n, a) for n, a in event.outputs.items())
            for branch, rows in (event.branch or {}).items():
                trace.branch_rows[branch] = rows
            for field, statuses in (event.feature_status or {}).items():
                trace.feature_status[field] = ",".join(
                    FEATURE_STATUS_NAMES[int(s)] for s in statuses.tolist()
                )
            traces.append(trace)
        return epb.ExplainResponse(
            graph=served.name, version=served.version, total_ns=total, nodes=traces, response=response
        )

    async def reload_graphs(self, request: epb.ReloadGraphsRequest, context) -> epb.ReloadGraphsResponse:  # type: ignore[no-untyped-def]
        results = await self.repository.reload(list(request.names))
        return epb.ReloadGraphsResponse(
            results=[
                epb.ReloadResult(name=r.name, version=r.version, action=r.action, error=r.error)
                for r in results
            ]
        )

    async def shadow_report(self, request: epb.ShadowReportRequest, context) -> epb.ShadowReportResponse:  # type: ignore[no-untyped-def]
        if request.graph and all(e.name != request.graph for e in self.repository.entries()):
            raise GraphNotFound(request.graph, "")
        report = self.repository.comparisons.report(request.graph or None)
        return epb.ShadowReportResponse(json=report.to_json(), table=render_table(report))

    def handler(self) -> grpc.GenericRpcHandler:
        return generic_handler(
            SERVICE,
            {
                "ListGraphs": (self.list_graphs, epb.ListGraphsRequest),
                "DescribeGraph": (self.describe_graph, epb.DescribeGraphRequest),
                "ValidateGraph": (self.validate_graph, epb.ValidateGraphRequest),
                "Explain": (self.explain, epb.ExplainRequest),
                "ReloadGraphs": (self.reload_graphs, epb.ReloadGraphsRequest),
                "ShadowReport": (self.shadow_report, epb.ShadowReportRequest),
            },
            self.state.limits,
            self.state.guard,
            default_level=ADMIN,
        )


def _output_refs(graph) -> list[str]:  # type: ignore[no-untyped-def]
    """The reference each served output is bound to, as written in graph.yaml."""
    return [out.ref.text for out in graph.spec.outputs]
