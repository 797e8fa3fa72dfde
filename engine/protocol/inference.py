"""``inference.GRPCInferenceService``: the Open Inference Protocol v2 plus Triton's extensions.

Translation only: each RPC decodes its message, asks the inference core (``InferenceCore``
for inference, ``ServerAdmin`` for everything else) and encodes the answer. Errors are raised
as ``engine.errors`` classes and mapped in one place (``engine.protocol.handlers`` and
``engine.protocol.status``).

``ModelStreamInfer`` serves each message of a stream as its own inference call (admitted,
traced, counted and logged like a unary one, labelled ``grpc-stream``), up to
``STREAM_WINDOW`` of them at once, and answers them in the order they arrived. A message
that fails is answered with its ``error_message`` (the same text a unary call's status would
carry) and the stream stays open. When the server drains, the stream takes no new messages,
answers the ones in flight, then ends with UNAVAILABLE so the client reconnects elsewhere.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Final

import grpc

from engine import __version__
from engine.protocol import codec, metadata
from engine.protocol.calls import SERVICE, GrpcInferCall
from engine.protocol.generated.inference import grpc_service_pb2 as pb
from engine.protocol.handlers import generic_handler
from engine.protocol.status import status_for
from engine.serving import InferenceCore, ServerAdmin
from engine.serving.auth import ADMIN, OPEN, TokenGuard

EXTENSIONS = ("model_configuration", "model_repository", "statistics")
"""The Triton extensions served here. Not advertised, since not implemented: ``classification``
(a request asking for it is refused), ``schedule_policy`` (no per-model scheduling settings),
``sequence``, shared memory, ``binary_tensor_data`` (HTTP)."""

Context = grpc.aio.ServicerContext[Any, Any]

STREAM_WINDOW: Final = 16
"""Messages of one stream served at once; the next ones wait in grpc's flow control."""


@dataclass(frozen=True)
class GrpcOptions:
    """What the gRPC front door itself needs: message limits, credentials, what configs report."""

    limits: codec.CodecLimits = field(default_factory=codec.CodecLimits)
    guard: TokenGuard = field(default_factory=TokenGuard)
    max_batch_size: int = 1024
    """The ``max_batch_size`` ModelConfig reports for graphs whose tensors all batch."""


class InferenceService:
    def __init__(self, core: InferenceCore, admin: ServerAdmin, options: GrpcOptions) -> None:
        self.core = core
        self.admin = admin
        self.options = options

    # -- health and metadata ----------------------------------------------------------------
    async def server_live(self, request: pb.ServerLiveRequest, context: Context) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=self.admin.state.live)

    async def server_ready(self, request: pb.ServerReadyRequest, context: Context) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.admin.state.serving)

    async def model_ready(self, request: pb.ModelReadyRequest, context: Context) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=self.admin.model_ready(request.name, request.version))

    async def server_metadata(
        self, request: pb.ServerMetadataRequest, context: Context
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(
            name="graph-engine", version=__version__, extensions=list(EXTENSIONS)
        )

    async def model_metadata(
        self, request: pb.ModelMetadataRequest, context: Context
    ) -> pb.ModelMetadataResponse:
        view, node = self.admin.resolve(request.name, request.version)
        if node is None:
            return metadata.model_metadata(view)
        return metadata.node_metadata(view, node)

    async def model_config(self, request: pb.ModelConfigRequest, context: Context) -> pb.ModelConfigResponse:
        view, node = self.admin.resolve(request.name, request.version)
        if node is None:
            return pb.ModelConfigResponse(config=metadata.model_config(view, self.options.max_batch_size))
        return pb.ModelConfigResponse(config=metadata.node_config(view, node))

    async def model_statistics(
        self, request: pb.ModelStatisticsRequest, context: Context
    ) -> pb.ModelStatisticsResponse:
        if not request.name:
            stats = []
            for graph in await self.admin.statistics():
                stats.append(metadata.graph_statistics(graph))
                stats.extend(
                    metadata.node_statistics(graph.name, graph.version, n) for n in graph.nodes.values()
                )
            return pb.ModelStatisticsResponse(model_stats=stats)
        view, node = self.admin.resolve(request.name, request.version)
        graph = next(s for s in await self.admin.statistics(view.name) if s.version == view.version)
        if node is None:
            return pb.ModelStatisticsResponse(model_stats=[metadata.graph_statistics(graph)])
        return pb.ModelStatisticsResponse(
            model_stats=[metadata.node_statistics(graph.name, graph.version, graph.nodes[node.name])]
        )

    # -- repository --------------------------------------------------------------------------
    async def repository_index(
        self, request: pb.RepositoryIndexRequest, context: Context
    ) -> pb.RepositoryIndexResponse:
        rows = await self.admin.index(ready_only=request.ready)
        return pb.RepositoryIndexResponse(
            models=[
                pb.RepositoryIndexResponse.ModelIndex(
                    name=row.name, version=row.version, state=row.state, reason=row.reason
                )
                for row in rows
            ]
        )

    async def repository_model_load(
        self, request: pb.RepositoryModelLoadRequest, context: Context
    ) -> pb.RepositoryModelLoadResponse:
        await self.admin.load(request.model_name)
        return pb.RepositoryModelLoadResponse()

    async def repository_model_unload(
        self, request: pb.RepositoryModelUnloadRequest, context: Context
    ) -> pb.RepositoryModelUnloadResponse:
        await self.admin.unload(request.model_name)
        return pb.RepositoryModelUnloadResponse()

    # -- inference ---------------------------------------------------------------------------
    async def model_infer(self, request: pb.ModelInferRequest, context: Context) -> pb.ModelInferResponse:
        return await self.core.infer(GrpcInferCall(request, context, self.options.limits))

    async def model_stream_infer(
        self, requests: AsyncIterator[bytes], context: Context
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        state = self.admin.state
        reader = aiter(requests)
        pending: deque[asyncio.Future[pb.ModelStreamInferResponse]] = deque()
        incoming: asyncio.Future[bytes] | None = asyncio.ensure_future(anext(reader))
        drain = asyncio.ensure_future(state.drained.wait())
        try:
            while True:
                waits: set[asyncio.Future[Any]] = set()
                reading = incoming is not None and not state.draining
                if reading and len(pending) < STREAM_WINDOW:
                    assert incoming is not None
                    waits.add(incoming)
                if pending:
                    waits.add(pending[0])
                if not waits:
                    if not reading:  # the client closed its side, or the server drains: all answered
                        break
                    waits.add(incoming)  # type: ignore[arg-type]  # reading implies incoming
                if not state.draining:
                    waits.add(drain)
                done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                while pending and pending[0].done():  # in arrival order
                    yield pending.popleft().result()
                if incoming is not None and incoming in done:
                    try:
                        data = incoming.result()
                    except StopAsyncIteration:
                        incoming = None
                        continue
                    pending.append(asyncio.ensure_future(self._stream_message(data, context)))
                    incoming = asyncio.ensure_future(anext(reader))
            if incoming is not None and state.draining:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "server is draining")
        finally:
            for task in (incoming, drain, *pending):
                if task is not None and not task.done():
                    task.cancel()

    async def _stream_message(self, data: bytes, context: Context) -> pb.ModelStreamInferResponse:
        """One message of a stream, answered with its response or its error."""
        limits = self.options.limits
        request: pb.ModelInferRequest | None = None
        try:
            request = codec.parse_infer_request(data, limits)
            call = GrpcInferCall(request, context, limits, method="ModelStreamInfer", protocol="grpc-stream")
            return pb.ModelStreamInferResponse(infer_response=await self.core.infer(call))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # answered in the message; the stream goes on
            reply = status_for(exc)
            echo = pb.ModelInferResponse()
            if request is not None:
                echo.model_name, echo.model_version, echo.id = (
                    request.model_name,
                    request.model_version,
                    request.id,
                )
            return pb.ModelStreamInferResponse(error_message=reply.message, infer_response=echo)

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
            self.options.limits,
            self.options.guard,
            streams={"ModelStreamInfer": self.model_stream_infer},
            levels={
                "ServerLive": OPEN,  # liveness and readiness answer probes without credentials
                "ServerReady": OPEN,
                "RepositoryModelLoad": ADMIN,
                "RepositoryModelUnload": ADMIN,
            },
        )


__all__ = ["EXTENSIONS", "SERVICE", "GrpcOptions", "InferenceService"]
