"""A measurement probe, not a front door: the engine's inference core behind grpc's thread-pool server.

Issue 19 asks for the transport to be chosen by measuring it on the engine's own graphs, not
only on an echo. This serves ``ModelInfer`` (and ``ServerReady``, for the bench's readiness
wait) on ``grpc.server`` with ``--threads`` handler threads; each call is handed to the one
event loop that owns the engine (``EngineServer``, started as usual on a second, unused port)
and its thread waits for the answer, the design a thread-pool door would have. Decoding, the
plan, encoding and statistics are the core's, exactly as behind grpc.aio; errors get the gRPC
door's status table. Only unary ``ModelInfer`` is bridged: enough to measure, not to serve.

    python -m bench.engine_threads GRAPHS --port P [--threads 16]
"""

from __future__ import annotations

import argparse
import asyncio
import threading
from pathlib import Path

import grpc

from bench.floor_server import serve_threads
from engine.config import ServeSettings
from engine.protocol.calls import GrpcInferCall
from engine.protocol.codec import parse_message
from engine.protocol.generated.inference import grpc_service_pb2 as pb
from engine.protocol.status import status_for
from engine.server import EngineServer, freeze_startup_heap


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("graphs", type=Path)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=16)
    args = parser.parse_args()

    try:
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, name="engine-loop", daemon=True).start()
    settings = ServeSettings.from_env(graphs=args.graphs, host="127.0.0.1", port=0, http_port=-1)
    engine = EngineServer(settings)
    asyncio.run_coroutine_threadsafe(engine.start(), loop).result(120)
    freeze_startup_heap()
    core, limits = engine.core, engine.grpc_options.limits  # the gRPC door's own limits

    def infer(data: bytes, context: grpc.ServicerContext) -> pb.ModelInferResponse:
        try:
            request = parse_message(pb.ModelInferRequest, data, limits)
            # grpc.ServicerContext has the two methods GrpcInferCall reads: time_remaining and
            # invocation_metadata.
            call = GrpcInferCall(request, context, limits)  # type: ignore[arg-type]
            return asyncio.run_coroutine_threadsafe(core.infer(call), loop).result()
        except Exception as exc:
            reply = status_for(exc)
            if reply.trailing_metadata:
                context.set_trailing_metadata(reply.trailing_metadata)
            context.abort(reply.code, reply.message)
            raise  # unreachable: abort raises

    def ready(data: bytes, context: grpc.ServicerContext) -> bytes:
        return pb.ServerReadyResponse(ready=engine.state.serving).SerializeToString()

    serve_threads(
        args.port, args.threads, infer, ready, response_serializer=pb.ModelInferResponse.SerializeToString
    )


if __name__ == "__main__":
    main()
