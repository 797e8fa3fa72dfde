"""Servers for the loadtest tests: a fast V2 echo endpoint, a stalling one, the engine, a /metrics page."""

from __future__ import annotations

import asyncio
import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from engine.protocol.generated.inference import grpc_service_pb2 as pb
from tests.server_thread import ServerThread

SERVICE = "inference.GRPCInferenceService"


class EchoServer:
    """A minimal V2 endpoint (ModelMetadata + ModelInfer) on its own event-loop thread.

    ``stall_at``: after this many ModelInfer calls the whole server pauses for
    ``stall_s`` once: every call that arrives during the pause waits until it ends,
    as when a process is stopped by a GC pause or a noisy neighbour.
    """

    def __init__(self, stall_at: int | None = None, stall_s: float = 1.0) -> None:
        self.stall_at = stall_at
        self.stall_s = stall_s
        self.calls = 0
        self.paused_until = 0.0
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="echo-server", daemon=True)
        self.port = 0

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _metadata(self, request: pb.ModelMetadataRequest, context: Any) -> pb.ModelMetadataResponse:
        if request.name != "echo":
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown model '{request.name}'")
        return pb.ModelMetadataResponse(
            name="echo",
            versions=["1"],
            platform="echo",
            inputs=[pb.ModelMetadataResponse.TensorMetadata(name="x", datatype="FP32", shape=[-1, 4])],
            outputs=[pb.ModelMetadataResponse.TensorMetadata(name="x", datatype="FP32", shape=[-1, 4])],
        )

    async def _infer(self, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:
        self.calls += 1
        if self.stall_at is not None and self.calls == self.stall_at:
            self.paused_until = time.monotonic() + self.stall_s
        wait = self.paused_until - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        if [t.name for t in request.inputs] != ["x"]:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "expected one input named 'x'")
        response = pb.ModelInferResponse(model_name=request.model_name, model_version="1", id=request.id)
        response.outputs.add(name="x", datatype="FP32", shape=request.inputs[0].shape)
        response.raw_output_contents.extend(request.raw_input_contents)
        return response

    def start(self) -> EchoServer:
        self.thread.start()

        async def boot() -> int:
            self.server = grpc.aio.server()
            handlers = {
                "ModelMetadata": grpc.unary_unary_rpc_method_handler(
                    self._metadata,
                    request_deserializer=pb.ModelMetadataRequest.FromString,
                    response_serializer=pb.ModelMetadataResponse.SerializeToString,
                ),
                "ModelInfer": grpc.unary_unary_rpc_method_handler(
                    self._infer,
                    request_deserializer=pb.ModelInferRequest.FromString,
                    response_serializer=pb.ModelInferResponse.SerializeToString,
                ),
            }
            self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
            port = self.server.add_insecure_port("127.0.0.1:0")
            await self.server.start()
            return port

        self.port = asyncio.run_coroutine_threadsafe(boot(), self.loop).result(10)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(0.5), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


class MetricsPage:
    """A /metrics page whose text the test sets; served by http.server on an ephemeral port."""

    def __init__(self, text: str = "") -> None:
        self.text = text
        page = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = page.text.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/metrics"

    def close(self) -> None:
        self.httpd.shutdown()


@pytest.fixture
def echo_server() -> Iterator[EchoServer]:
    server = EchoServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def fraud_server(example_graphs: Path) -> Iterator[ServerThread]:
    with ServerThread(example_graphs) as server:
        yield server


def write_sla(path: Path, sla: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(sla, sort_keys=False))
    return path
