"""``inference.GRPCInferenceService``: the Open Inference Protocol v2 plus Triton's extensions.

Thin: decode at the edge, hand numpy arrays to the graph's runner, encode the
answer. Errors are raised as ``engine.errors`` classes and mapped in one place
(``engine.protocol.handlers``/``status``).
"""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass, field

import grpc
import numpy as np
from opentelemetry import trace

from engine import __version__
from engine.errors import EngineError, GraphInvalid, GraphNotFound, ServerNotReady
from engine.graph.logging_policy import LoggingPolicy, with_derived_redactions
from engine.interfaces import RequestRecorder
from engine.protocol import codec, metadata
from engine.protocol.admission import Admission
from engine.protocol.auth import ADMIN, OPEN, TokenGuard
from engine.protocol.generated.inference import grpc_service_pb2 as pb
from engine.protocol.handlers import generic_handler
from engine.protocol.status import code_for
from engine.protocol.tracing_edge import ObserverFactory, RequestTracing
from engine.repository import READY, GraphRepository, ServedGraph
from engine.shadow.outcome import RequestShadows
from engine.shadow.runner import LiveResult

SERVICE = "inference.GRPCInferenceService"
EXTENSIONS = ("classification", "model_configuration", "model_repository", "statistics", "schedule_policy")


@dataclass
class ServerState:
    """Process lifecycle as the protocol sees it: not ready until started, then draining."""

    live: bool = True
    ready: bool = False
    stopping: bool = False
    """Set when a drain begins: health and ServerReady turn false while calls are still served."""
    draining: bool = False
    """Set after the drain delay: new calls are refused with UNAVAILABLE."""
    in_flight: int = 0
    max_batch_size: int = 1024
    limits: codec.CodecLimits = field(default_factory=codec.CodecLimits)
    admission: Admission = field(default_factory=Admission)
    guard: TokenGuard = field(default_factory=TokenGuard)

    last_arrival: float = 0.0
    """time.monotonic() of the latest ModelInfer, refused ones included (a drain waits for quiet)."""
    unrouted: dict[str, int] = field(default_factory=dict)
    """Requests that named no served graph (unknown, not ready), by status code."""

    def count_unrouted(self, code: str) -> None:
        self.unrouted[code] = self.unrouted.get(code, 0) + 1

    def check_ready(self) -> None:
        if self.draining:
            raise ServerNotReady("server is draining")
        if not self.ready:
            raise ServerNotReady("server is starting")


class InferenceService:
    def __init__(
        self,
        repository: GraphRepository,
        state: ServerState,
        tracing: RequestTracing | None = None,
        recorder: RequestRecorder | None = None,
    ) -> None:
        self.repository = repository
        self.state = state
        self.tracing = tracing
        self.recorder = recorder

    # -- health and metadata ----------------------------------------------------------------
    async def server_live(self, request: pb.ServerLiveRequest, context) -> pb.ServerLiveResponse:  # type: ignore[no-untyped-def]
        return pb.ServerLiveResponse(live=self.state.live)

    async def server_ready(self, request: pb.ServerReadyRequest, context) -> pb.ServerReadyResponse:  # type: ignore[no-untyped-def]
        return pb.ServerReadyResponse(ready=self.state.ready and not self.state.stopping)

    async def model_ready(self, request: pb.ModelReadyRequest, context) -> pb.ModelReadyResponse:  # type: ignore[no-untyped-def]
        ready = self.state.ready and not self.state.stopping
        return pb.ModelReadyResponse(ready=ready and self.repository.is_ready(request.name, request.version))

    async def server_metadata(self, request, context) -> pb.ServerMetadataResponse:  # type: ignore[no-untyped-def]
        return pb.ServerMetadataResponse(
            name="graph-engine", version=__version__, extensions=list(EXTENSIONS)
        )

    async def model_metadata(self, request: pb.ModelMetadataRequest, context) -> pb.ModelMetadataResponse:  # type: ignore[no-untyped-def]
        served = self.repository.get(request.name, request.version)
        versions = sorted(self.repository.entry(request.name).versions, key=_numeric)
        return metadata.model_metadata(served, versions)

    async def model_config(self, request: pb.ModelConfigRequest, context) -> pb.ModelConfigResponse:  # type: ignore[no-untyped-def]
        graph, node = self._resolve(request.name, request.version)
        if node is None:
            return pb.ModelConfigResponse(config=metadata.model_config(graph, self.state.max_batch_size))
        info = next(n for n in graph.graph.plan.nodes if n.name == node)
        return pb.ModelConfigResponse(config=metadata.node_config(graph, info))

    async def model_statistics(
        self, request: pb.ModelStatisticsRequest, context
    ) -> pb.ModelStatisticsResponse:  # type: ignore[no-untyped-def]
        if not request.name:
            stats = []
            for entry in self.repository.entries():
                for served in entry.versions.values():
                    stats.append(metadata.graph_statistics(served.stats))
                    stats.extend(
                        metadata.node_statistics(served.name, served.version, node)
                        for node in served.stats.nodes.values()
                    )
            return pb.ModelStatisticsResponse(model_stats=stats)
        graph, node = self._resolve(request.name, request.version)
        if node is None:
            return pb.ModelStatisticsResponse(model_stats=[metadata.graph_statistics(graph.stats)])
        node_stats = graph.stats.nodes[node]
        return pb.ModelStatisticsResponse(
            model_stats=[metadata.node_statistics(graph.name, graph.version, node_stats)]
        )

    # -- repository --------------------------------------------------------------------------
    async def repository_index(
        self, request: pb.RepositoryIndexRequest, context
    ) -> pb.RepositoryIndexResponse:  # type: ignore[no-untyped-def]
        models = []
        for entry in self.repository.entries():
            if request.ready and entry.state != READY:
                continue
            reason = entry.last_error  # also a rejected new version beside a serving one
            if not entry.versions:
                models.append(
                    pb.RepositoryIndexResponse.ModelIndex(
                        name=entry.name, version="", state=entry.state, reason=reason
                    )
                )
            for version in sorted(entry.versions, key=_numeric):
                state = "UNAVAILABLE" if entry.unloaded else READY
                models.append(
                    pb.RepositoryIndexResponse.ModelIndex(
                        name=entry.name, version=version, state=state, reason=reason
                    )
                )
        return pb.RepositoryIndexResponse(models=models)

    async def repository_model_load(self, request, context) -> pb.RepositoryModelLoadResponse:  # type: ignore[no-untyped-def]
        results = await self.repository.reload([request.model_name])
        if any(r.action == "failed" for r in results):  # the old version, if any, keeps serving
            raise GraphInvalid(request.model_name, self.repository.entry(request.model_name).diagnostics)
        return pb.RepositoryModelLoadResponse()

    async def repository_model_unload(self, request, context) -> pb.RepositoryModelUnloadResponse:  # type: ignore[no-untyped-def]
        self.repository.unload(request.model_name)
        return pb.RepositoryModelUnloadResponse()

    # -- inference ---------------------------------------------------------------------------
    async def model_infer(
        self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelInferResponse:
        t0 = time.perf_counter_ns()
        self.state.last_arrival = time.monotonic()
        try:
            self.state.check_ready()
            served = self.repository.get(request.model_name, request.model_version)
        except EngineError as exc:  # counted without a graph label: names are unbounded
            self.state.count_unrouted(code_for(exc).name)
            raise
        admission = self.state.admission
        try:
            await admission.acquire(context.time_remaining())
        except EngineError as exc:  # shed before any work: counted under its graph
            served.stats.record_request(
                ok=False, code=code_for(exc).name, total_ns=time.perf_counter_ns() - t0
            )
            raise
        try:
            if self.tracing is None:
                return await self._infer(served, request, context, t0, None)
            metadata = context.invocation_metadata()
            with self.tracing.request_span(served, request.id, metadata) as (span, observers):  # type: ignore[arg-type]
                try:
                    return await self._infer(served, request, context, t0, observers)
                except BaseException as exc:
                    span.set_attribute("rpc.grpc.status_code", code_for(exc).value[0])
                    raise
        finally:
            admission.release()

    async def _infer(
        self,
        served: ServedGraph,
        request: pb.ModelInferRequest,
        context: grpc.aio.ServicerContext,
        t0: int,
        observers: ObserverFactory | None,
    ) -> pb.ModelInferResponse:
        state = self.state
        state.in_flight += 1
        code = "OK"
        error = ""
        t1 = t2 = t0
        rows = 0
        inputs: dict[str, np.ndarray] = {}
        outputs: tuple[np.ndarray, ...] = ()
        policy = _policy(served)
        recorder = self.recorder if policy.enabled else None
        observer = None
        repository = self.repository
        mirrored = repository.mirrored(served.name)
        shadows = (
            RequestShadows() if recorder is not None and (served.runner.has_shadows or mirrored) else None
        )
        live = None
        try:
            inputs, wanted, deadline = decode_request(served, request, context, state.limits)
            observer = observers() if observers is not None else None
            if recorder is not None:  # keeps the node events for the record, forwarding to tracing
                observer = recorder.observer(observer)
            t1 = time.perf_counter_ns()
            if mirrored:  # graphs with `shadow_of: <this graph>` start now, on the same inputs
                live = repository.mirror(served.name, inputs, request.id, shadows)
            outputs = await served.runner.run(
                list(inputs.values()),
                deadline=deadline,
                observer=observer,
                request_id=request.id,
                shadows=shadows,
            )
            t2 = time.perf_counter_ns()
            if live is not None:
                plan_outputs = served.graph.plan.outputs
                live.set_result(
                    LiveResult(
                        {s.name: a for s, a in zip(plan_outputs, outputs, strict=True) if a is not None},
                        t2 - t1,
                    )
                )
            response = encode_answer(served, request.id, outputs, wanted, raw=codec.wants_raw(request))
            rows = _rows(outputs)
            return response
        except BaseException as exc:
            code = code_for(exc).name
            error = str(exc) if isinstance(exc, EngineError) else type(exc).__name__
            raise
        finally:
            state.in_flight -= 1
            if live is not None and not live.done():  # the live graph failed: nothing to compare
                live.set_result(None)
            t3 = time.perf_counter_ns()
            served.stats.record_request(
                ok=code == "OK",
                code=code,
                total_ns=t3 - t0,
                decode_ns=t1 - t0,
                infer_ns=t2 - t1,
                encode_ns=t3 - t2,
                rows=rows,
            )
            if recorder is not None:
                reason = policy.should_log(code == "OK")
                if reason is None and shadows is not None and "shadow_disagreement" in policy.always_on:
                    reason = "shadow_disagreement"  # logged only if a shadow disagrees (known later)
                if reason is not None:
                    recorder.record(
                        policy=policy,
                        reason=reason,
                        request_id=request.id,
                        trace_id=_trace_id(),
                        graph=served.name,
                        version=served.version,
                        models=_models(served),
                        inputs=inputs,
                        outputs={
                            spec.name: a
                            for spec, a in zip(served.graph.plan.outputs, outputs, strict=False)
                            if a is not None
                        },
                        observer=observer,
                        status=code,
                        error=error,
                        latency_us=(t3 - t0) // 1000,
                        time_ns=time.time_ns() - (t3 - t0),
                        shadows=shadows,
                    )

    def _resolve(self, name: str, version: str) -> tuple[ServedGraph, str | None]:
        """A graph, or one of its nodes addressed as ``<graph>.<node>``."""
        try:
            return self.repository.get(name, version), None
        except GraphNotFound:
            graph_name, sep, node = name.rpartition(metadata.NODE_SEPARATOR)
            if not sep:
                raise
            try:
                served = self.repository.get(graph_name, version)
            except GraphNotFound:
                raise GraphNotFound(name, version) from None
            if not any(n.name == node for n in served.graph.plan.nodes):
                raise GraphNotFound(name, version) from None
            return served, node

    def handler(self) -> grpc.GenericRpcHandler:
        return generic_handler(
            SERVICE,
            {
                "ServerLive": (self.server_live, pb.ServerLiveRequest),
                "ServerReady": (self.server_ready, pb.ServerReadyRequest),
                "ModelReady": (self.model_ready, pb.ModelReadyRequest),
                "ServerMetadata": (self.server_metadata, pb.ServerMetadataRequest),
                "ModelMetadata": (self.model_metadata, pb.ModelMetadataRequest),
                "ModelConfig": (self.model_config, pb.ModelConfigRequest),
                "ModelStatistics": (self.model_statistics, pb.ModelStatisticsRequest),
                "RepositoryIndex": (self.repository_index, pb.RepositoryIndexRequest),
                "RepositoryModelLoad": (self.repository_model_load, pb.RepositoryModelLoadRequest),
                "RepositoryModelUnload": (self.repository_model_unload, pb.RepositoryModelUnloadRequest),
                "ModelInfer": (self.model_infer, pb.ModelInferRequest),
            },
            self.state.limits,
            self.state.guard,
            levels={
                "ServerLive": OPEN,  # liveness and readiness answer probes without credentials
                "ServerReady": OPEN,
                "RepositoryModelLoad": ADMIN,
                "RepositoryModelUnload": ADMIN,
            },
        )


def decode_request(
    served: ServedGraph,
    request: pb.ModelInferRequest,
    context: grpc.aio.ServicerContext,
    limits: codec.CodecLimits,
) -> tuple[dict[str, np.ndarray], tuple[str, ...], float | None]:
    """The request's inputs (in plan order), the outputs asked for, and its absolute deadline."""
    plan = served.graph.plan
    inputs = codec.decode_inputs(request, plan.inputs, limits)
    wanted = codec.requested_outputs(request, plan.outputs)
    remaining = context.time_remaining()
    return inputs, wanted, None if remaining is None else time.monotonic() + remaining


def encode_answer(
    served: ServedGraph,
    request_id: str,
    outputs: tuple[np.ndarray, ...],
    wanted: tuple[str, ...],
    *,
    raw: bool,
) -> pb.ModelInferResponse:
    """The response carrying ``wanted`` of the plan's ``outputs``."""
    index = served.output_index
    return codec.encode_response(
        model_name=served.name,
        model_version=served.version,
        request_id=request_id,
        # an output an optional node left out (it failed) is absent from the response
        outputs=[(name, outputs[index[name]]) for name in wanted if outputs[index[name]] is not None],
        raw=raw,
    )


def _trace_id() -> str:
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else ""


_MODELS: weakref.WeakKeyDictionary[ServedGraph, dict[str, str]] = weakref.WeakKeyDictionary()


def _models(served: ServedGraph) -> dict[str, str]:
    """node -> model sha256 of a served version (computed once per version)."""
    found = _MODELS.get(served)
    if found is None:
        found = _MODELS[served] = {n.name: n.model_sha256 for n in served.graph.plan.nodes if n.model_sha256}
    return found


_POLICIES: weakref.WeakKeyDictionary[ServedGraph, LoggingPolicy] = weakref.WeakKeyDictionary()


def _policy(served: ServedGraph) -> LoggingPolicy:
    """The graph's logging policy, redaction extended to derived values (once per version)."""
    found = _POLICIES.get(served)
    if found is None:
        outputs = {out.name: out.ref.text for out in served.graph.spec.outputs}
        found = with_derived_redactions(served.graph.spec.logging, served.graph.plan.nodes, outputs)
        _POLICIES[served] = found
    return found


def _rows(outputs) -> int:  # type: ignore[no-untyped-def]
    for array in outputs:
        if array is not None and array.ndim:
            return int(array.shape[0])
    return 1


def _numeric(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (-1, version)


__all__ = ["EXTENSIONS", "SERVICE", "InferenceService", "ServerState"]
