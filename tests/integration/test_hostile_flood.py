"""A flood is shed by gRPC itself before a request is read (--max-concurrent-rpcs), while a
health-only listener (--health-port) keeps answering probes. Figures: ``make bench`` (flood)."""

from __future__ import annotations

import threading
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from engine.protocol.generated.inference import grpc_service_pb2 as pb
from tests.adapters.proxy import stalling_store
from tests.integration.held_graph import held_repository
from tests.integration.test_overload import _held_request
from tests.server_thread import ServerThread

HELD = 2


def _health(address: str) -> int:
    with grpc.insecure_channel(address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    return int(reply.status)


def test_calls_beyond_the_rpc_limit_are_refused_unread_and_probes_still_answer(
    tmp_path: Path, example_graphs: Path
) -> None:
    with stalling_store(6379) as (proxy, proxy_loop):
        root = tmp_path / "graphs"
        held_repository(root, proxy.port, name="slow", quickstart=example_graphs / "quickstart")
        with ServerThread(root, max_concurrent_rpcs=HELD, health_port=0, max_concurrency=0) as server:
            request = _held_request()
            channel = grpc.insecure_channel(server.url)
            infer = channel.unary_unary(
                "/inference.GRPCInferenceService/ModelInfer",
                request_serializer=pb.ModelInferRequest.SerializeToString,
                response_deserializer=pb.ModelInferResponse.FromString,
            )
            infer(request, timeout=60)  # connected to the store
            proxy_loop.soon(proxy.stall)
            answers: list[object] = []
            held = [
                threading.Thread(target=lambda: answers.append(infer(request, timeout=60)))
                for _ in range(HELD)
            ]
            for thread in held:
                thread.start()
            state = server.server.state
            while state.in_flight < HELD:
                threading.Event().wait(0.01)
            with pytest.raises(grpc.RpcError) as refused:
                infer(request, timeout=10)
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert state.in_flight == HELD  # the refused call never reached the inference core
            health = f"127.0.0.1:{server.server.health_port}"
            assert _health(health) == health_pb2.HealthCheckResponse.SERVING
            proxy_loop.soon(proxy.resume)
            for thread in held:
                thread.join(60)
            assert len(answers) == HELD and all(isinstance(a, pb.ModelInferResponse) for a in answers)
            assert _health(server.url) == health_pb2.HealthCheckResponse.SERVING  # and the main port again
            channel.close()
