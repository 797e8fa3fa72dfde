"""``engine.v1.Engine``: our admin service — list, describe, validate, explain, reload, shadow and
monitoring reports.

Translation only, like ``engine.protocol.inference``: ``Explain`` is an inference call like
any other (admitted, counted, recorded) with an observer that keeps every node's event.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import grpc

from engine.errors import InvalidRequest
from engine.graph.values.plan import NodeInfo
from engine.interfaces import FEATURE_STATUS_NAMES, NodeEvent
from engine.protocol import codec
from engine.protocol.calls import GrpcInferCall
from engine.protocol.generated.engine.v1 import engine_pb2 as epb
from engine.protocol.handlers import generic_handler
from engine.protocol.inference import Context, GrpcOptions
from engine.serving import FailedGraphView, GraphView, InferenceCore, ServerAdmin
from engine.serving.auth import ADMIN
from engine.tensors import TensorSpec

SERVICE = "engine.v1.Engine"


def _tensor_info(spec: TensorSpec) -> epb.TensorInfo:
    return epb.TensorInfo(name=spec.name, datatype=spec.datatype.value, shape=list(spec.shape))


def _source_of(ref: str) -> str:
    head, _, _ = ref.partition(".")
    return head


def edges(nodes: tuple[NodeInfo, ...], outputs: dict[str, str]) -> list[epb.Edge]:
    found: list[epb.Edge] = []
    for node in nodes:
        found.extend(epb.Edge(source=_source_of(ref), target=node.name, tensor=ref) for ref in node.inputs)
        found.extend(epb.Edge(source=node.name, target=branch, tensor="") for branch in node.branches)
    found.extend(
        epb.Edge(source=_source_of(ref), target="outputs", tensor=name) for name, ref in outputs.items()
    )
    return found


def _node_trace(event: NodeEvent, include_tensors: bool) -> epb.NodeTrace:
    trace = epb.NodeTrace(
        name=event.node,
        kind=event.kind,
        start_ns=event.start_ns,
        duration_ns=event.duration_ns,
        rows=event.rows,
        error=event.error or "",
    )
    if include_tensors:
        trace.inputs.extend(codec.encode_tensor(n, a) for n, a in event.inputs.items())
        trace.outputs.extend(codec.encode_tensor(n, a) for n, a in event.outputs.items())
    for branch, rows in (event.branch or {}).items():
        trace.branch_rows[branch] = rows
    for name, statuses in (event.feature_status or {}).items():
        trace.feature_status[name] = ",".join(FEATURE_STATUS_NAMES[int(s)] for s in statuses.tolist())
    trace.redacted.extend(event.redacted)
    return trace


class AdminService:
    def __init__(
        self,
        core: InferenceCore,
        admin: ServerAdmin,
        options: GrpcOptions,
        log_counters: Callable[[], Mapping[str, int]] | None = None,
    ) -> None:
        self.core = core
        self.admin = admin
        self.options = options
        self.log_counters = log_counters  # the request log's written/dropped/failed/pending

    async def list_graphs(self, request: epb.ListGraphsRequest, context: Context) -> epb.ListGraphsResponse:
        graphs = [
            epb.GraphSummary(
                name=g.name,
                version=g.latest,
                state=g.state,
                last_error=g.last_error,
                versions=list(g.versions),
            )
            for g in await self.admin.graphs()
        ]
        return epb.ListGraphsResponse(graphs=graphs)

    async def describe_graph(
        self, request: epb.DescribeGraphRequest, context: Context
    ) -> epb.DescribeGraphResponse:
        view = self.admin.describe(request.name, request.version)
        if isinstance(view, FailedGraphView):
            return epb.DescribeGraphResponse(
                name=view.name, state=view.state, last_error=view.last_error, source_path=str(view.folder)
            )
        return self._described(view)

    def _described(self, view: GraphView) -> epb.DescribeGraphResponse:
        outputs = {spec.name: ref for spec, ref in zip(view.outputs, view.output_refs, strict=True)}
        return epb.DescribeGraphResponse(
            name=view.name,
            version=view.version,
            state=view.state,
            last_error=view.last_error,
            source_path=str(view.source_path),
            description=view.description,
            inputs=[_tensor_info(s) for s in view.inputs],
            outputs=[_tensor_info(s) for s in view.outputs],
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
                    model_source=view.model_sources.get(n.name, ""),
                )
                for n in view.nodes
            ],
            edges=edges(view.nodes, outputs),
            mermaid=view.mermaid,
            request_log=epb.RequestLogCounters(**self.log_counters()) if self.log_counters else None,
            logging_enabled=view.logging_enabled,
            logging_sample=view.logging_sample,
        )

    async def validate_graph(
        self, request: epb.ValidateGraphRequest, context: Context
    ) -> epb.ValidateGraphResponse:
        diagnostics = await self.admin.validate(request.yaml, request.filename, request.graph_dir)
        return epb.ValidateGraphResponse(
            ok=not any(d.severity == "error" for d in diagnostics),
            diagnostics=[
                epb.Diagnostic(file=d.file, line=d.line, col=d.col, severity=d.severity, message=d.message)
                for d in diagnostics
            ],
        )

    async def explain(self, request: epb.ExplainRequest, context: Context) -> epb.ExplainResponse:
        infer = request.request
        if not infer.model_name:
            raise InvalidRequest("explain needs request.model_name")
        call = GrpcInferCall(
            infer, context, self.options.limits, service=SERVICE, method="Explain", raw=False
        )
        response, events = await self.core.explain(call, reveal=request.show_redacted)
        return epb.ExplainResponse(
            graph=response.model_name,
            version=response.model_version,
            total_ns=call.run_ns,
            nodes=[_node_trace(event, request.include_tensors) for event in events],
            response=response,
        )

    async def reload_graphs(
        self, request: epb.ReloadGraphsRequest, context: Context
    ) -> epb.ReloadGraphsResponse:
        outcomes = await self.admin.reload(list(request.names))
        return epb.ReloadGraphsResponse(
            results=[
                epb.ReloadResult(name=r.name, version=r.version, action=r.action, error=r.error)
                for r in outcomes
            ]
        )

    async def shadow_report(
        self, request: epb.ShadowReportRequest, context: Context
    ) -> epb.ShadowReportResponse:
        report = await self.admin.shadow_report(request.graph)
        return epb.ShadowReportResponse(json=report.json, table=report.table)

    async def monitor_report(
        self, request: epb.MonitorReportRequest, context: Context
    ) -> epb.MonitorReportResponse:
        report = await self.admin.monitor_report(request.graph)
        return epb.MonitorReportResponse(json=report.json, table=report.table)

    async def feedback(self, request: epb.FeedbackRequest, context: Context) -> epb.FeedbackResponse:
        if not request.graph:
            raise InvalidRequest("Feedback needs 'graph'")
        labels = [(label.request_id, label.row, label.value) for label in request.labels]
        counts = await self.admin.feedback(request.graph, labels)
        return epb.FeedbackResponse(**counts)

    async def rollout(self, request: epb.RolloutRequest, context: Context) -> epb.RolloutResponse:
        if not request.graph:
            raise InvalidRequest("Rollout needs 'graph'")
        view = await self.admin.rollout(request.graph, request.action or "status")
        return epb.RolloutResponse(json=view.json, table=view.table)

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
                "MonitorReport": (self.monitor_report, epb.MonitorReportRequest),
                "Feedback": (self.feedback, epb.FeedbackRequest),
                "Rollout": (self.rollout, epb.RolloutRequest),
            },
            self.options.limits,
            self.options.guard,
            default_level=ADMIN,
        )
