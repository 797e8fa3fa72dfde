"""The floor: a bare grpc.aio Open Inference Protocol server with no graph engine.

Modes: ``echo`` (answers the input as the output, no model), ``ort-inline``
(onnxruntime on the event loop), ``ort-pool`` (onnxruntime in a thread pool).
It does the least a V2 server can: parse, np.frombuffer, run, answer raw.

Transports (``--transport``), to choose the engine's by measurement (``make bench-peers``):
``aio`` (grpc.aio on uvloop, what the engine uses), ``aio-asyncio`` (grpc.aio on the default
event loop) and ``sync`` (grpc's thread-pool server, ``--threads`` handler threads).
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import numpy as np
import onnxruntime as ort

from engine.protocol.generated.inference import grpc_service_pb2 as pb


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=("echo", "ort-inline", "ort-pool"), required=True)
    parser.add_argument("--model")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--transport", choices=("aio", "aio-asyncio", "sync", "sync-to-loop"), default="aio")
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()

    session = None if args.mode == "echo" else open_session(args.model)
    pool = ThreadPoolExecutor(2)
    answer = answerer(session)

    if args.transport == "sync":
        serve_sync(args.port, args.threads, answer)
        return
    if args.transport == "sync-to-loop":
        serve_sync_to_loop(args.port, args.threads, answer)
        return

    async def infer(data: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        if session is None or args.mode == "ort-inline":
            return answer(data)
        request = pb.ModelInferRequest.FromString(data)
        tensor = request.inputs[0]
        x = np.frombuffer(request.raw_input_contents[0], dtype=np.float32).reshape(tuple(tensor.shape))
        loop = asyncio.get_running_loop()
        y = (await loop.run_in_executor(pool, session.run, ["y"], {"x": x}))[0]
        return _response(request, y)

    async def ready(data: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        return pb.ServerReadyResponse(ready=True).SerializeToString()

    async def serve() -> None:
        server = grpc.aio.server()
        handlers: dict[str, Any] = {
            "ModelInfer": grpc.unary_unary_rpc_method_handler(infer),
            "ServerReady": grpc.unary_unary_rpc_method_handler(ready),
        }
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("inference.GRPCInferenceService", handlers),)
        )
        server.add_insecure_port(f"127.0.0.1:{args.port}")
        await server.start()
        await server.wait_for_termination()

    if args.transport == "aio-asyncio":
        asyncio.run(serve())
        return
    try:
        import uvloop

        uvloop.run(serve())
    except ImportError:
        asyncio.run(serve())


def open_session(model: str) -> ort.InferenceSession:
    """onnxruntime on the CPU with one thread, as the engine opens a model by default."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def answerer(session: ort.InferenceSession | None) -> Callable[[bytes], bytes]:
    """The floor's whole synchronous work for one call's bytes: parse, ``np.frombuffer``, run
    the model (or echo the input when ``session`` is None), build and serialise the answer.
    Every transport here calls it, and ``bench.core_cost`` measures it beside the engine's core."""

    def answer(data: bytes) -> bytes:
        request = pb.ModelInferRequest.FromString(data)
        tensor = request.inputs[0]
        x = np.frombuffer(request.raw_input_contents[0], dtype=np.float32).reshape(tuple(tensor.shape))
        y = x if session is None else session.run(["y"], {"x": x})[0]
        return _response(request, y)

    return answer


def _response(request: pb.ModelInferRequest, y: np.ndarray) -> bytes:
    response = pb.ModelInferResponse(model_name=request.model_name, id=request.id)
    response.outputs.add(name="y", datatype="FP32", shape=list(y.shape))
    response.raw_output_contents.append(y.tobytes())
    return response.SerializeToString()


def serve_threads(
    port: int,
    threads: int,
    infer: Callable[[bytes, grpc.ServicerContext], Any],
    ready: Callable[[bytes, grpc.ServicerContext], bytes],
    response_serializer: Callable[[Any], bytes] | None = None,
) -> None:
    """grpc's thread-pool server answering ``ModelInfer`` and ``ServerReady``, until terminated."""
    server = grpc.server(ThreadPoolExecutor(threads))
    handlers: dict[str, Any] = {
        "ModelInfer": grpc.unary_unary_rpc_method_handler(infer, response_serializer=response_serializer),
        "ServerReady": grpc.unary_unary_rpc_method_handler(ready),
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("inference.GRPCInferenceService", handlers),)
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    server.wait_for_termination()


def serve_sync(port: int, threads: int, answer: Callable[[bytes], bytes]) -> None:
    """grpc's thread-pool server: each call runs ``answer`` on one of ``threads`` threads."""

    def infer(data: bytes, context: grpc.ServicerContext) -> bytes:
        return answer(data)

    def ready(data: bytes, context: grpc.ServicerContext) -> bytes:
        return pb.ServerReadyResponse(ready=True).SerializeToString()

    serve_threads(port, threads, infer, ready)


def serve_sync_to_loop(port: int, threads: int, answer: Callable[[bytes], bytes]) -> None:
    """grpc's thread-pool server handing every call to one asyncio (uvloop) event loop in
    another thread and waiting for the answer: what an engine on this transport would pay."""
    import threading

    try:
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()

    async def on_loop(data: bytes) -> bytes:
        return answer(data)

    def infer(data: bytes, context: grpc.ServicerContext) -> bytes:
        return asyncio.run_coroutine_threadsafe(on_loop(data), loop).result()

    def ready(data: bytes, context: grpc.ServicerContext) -> bytes:
        return pb.ServerReadyResponse(ready=True).SerializeToString()

    serve_threads(port, threads, infer, ready)


if __name__ == "__main__":
    main()
