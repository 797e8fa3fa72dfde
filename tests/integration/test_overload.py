"""Overload: beyond the concurrency limit and its queue, calls are shed at once with
RESOURCE_EXHAUSTED and a retry pushback; health, metadata and admin calls still answer."""

from __future__ import annotations

import threading
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import tritonclient.grpc as triton
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from engine.protocol.generated.inference import grpc_service_pb2 as pb
from tests.adapters.proxy import LoopThread, StallingProxy, stalling_store
from tests.integration.held_graph import held_repository
from tests.integration.slow_model import WIDTH
from tests.server_thread import ServerThread


def _held_request() -> pb.ModelInferRequest:
    """Two rows for graph ``slow`` (tests/integration/held_graph.py), in raw V2 form."""
    request = pb.ModelInferRequest(model_name="slow")
    request.inputs.add(name="x", datatype="FP32", shape=[2, WIDTH])
    request.inputs.add(name="k", datatype="BYTES", shape=[2, 1])
    request.raw_input_contents.append(np.ones((2, WIDTH), np.float32).tobytes())
    request.raw_input_contents.append(b"".join(len(k).to_bytes(4, "little") + k for k in (b"k0", b"k1")))
    return request


def test_a_saturated_server_sheds_with_a_pushback_and_keeps_answering_health(
    tmp_path: Path, example_graphs: Path
) -> None:
    # The two admitted calls are held in their feature fetch (a stalled proxy) until the end.
    with stalling_store(6379) as (proxy, proxy_loop):
        root = tmp_path / "graphs"
        held_repository(root, proxy.port, name="slow", quickstart=example_graphs / "quickstart")
        _saturate(root, proxy, proxy_loop)


def _saturate(root: Path, proxy: StallingProxy, proxy_loop: LoopThread) -> None:
    with ServerThread(root, max_concurrency=1, max_queue=1, max_queue_wait_s=60.0) as server:
        request = _held_request()
        channel = grpc.insecure_channel(server.url)
        infer = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer",
            request_serializer=pb.ModelInferRequest.SerializeToString,
            response_deserializer=pb.ModelInferResponse.FromString,
        )
        infer(request, timeout=60)  # connected to the store
        proxy_loop.soon(proxy.stall)
        results: list[object] = []

        def call() -> None:
            try:
                results.append(infer(request, timeout=60))
            except grpc.RpcError as exc:
                results.append(exc)

        running = [threading.Thread(target=call) for _ in range(2)]  # one runs, one waits in the queue
        for thread in running:
            thread.start()
        state = server.server.state
        deadline = threading.Event()
        for _ in range(1500):  # until both are admitted or queued
            if state.admission.active == 1 and state.admission.queued == 1:
                break
            deadline.wait(0.02)
        assert (state.admission.active, state.admission.queued) == (1, 1)

        # A third call finds the slot and the queue taken: shed at once, with a pushback.
        shed = infer.with_call
        try:
            shed(request, timeout=60)
            raise AssertionError("expected RESOURCE_EXHAUSTED")
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "capacity" in exc.details()
            trailers = dict(exc.trailing_metadata() or ())
            assert int(trailers["grpc-retry-pushback-ms"]) >= 10

        # Health, metadata and admin calls are never queued or shed.
        health = health_pb2_grpc.HealthStub(channel)
        status = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=2).status
        assert status == health_pb2.HealthCheckResponse.SERVING
        client = triton.InferenceServerClient(server.url)
        assert client.get_model_metadata("slow", as_json=True)["name"] == "slow"
        assert client.is_server_ready()

        assert (state.admission.active, state.admission.queued) == (1, 1)  # still held
        proxy_loop.soon(proxy.resume)
        for thread in running:
            thread.join(60)
        assert all(isinstance(r, pb.ModelInferResponse) for r in results), results
        assert state.admission.active == 0 and state.admission.queued == 0

        text = urllib.request.urlopen(
            f"http://127.0.0.1:{server.server.metrics_port}/metrics", timeout=5
        ).read()
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text.decode())
            for s in family.samples
        }
        assert samples[("engine_admission_rejected_total", (("reason", "queue_full"),))] == 1
        code = (("code", "RESOURCE_EXHAUSTED"), ("graph", "slow"), ("version", "1"))
        assert samples[("engine_requests_total", code)] == 1
        client.close()
        channel.close()
