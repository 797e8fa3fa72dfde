"""Overload: beyond the concurrency limit and its queue, calls are shed at once with
RESOURCE_EXHAUSTED and a retry pushback; health, metadata and admin calls still answer."""

from __future__ import annotations

import shutil
import threading
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import tritonclient.grpc as triton
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from engine.protocol.generated.inference import grpc_service_pb2 as pb
from tests.integration.slow_model import ROWS, WIDTH, slow_graph
from tests.server_thread import ServerThread


def test_a_saturated_server_sheds_with_a_pushback_and_keeps_answering_health(
    tmp_path: Path, example_graphs: Path
) -> None:
    root = tmp_path / "graphs"
    shutil.copytree(example_graphs / "quickstart", root / "quickstart")
    slow_graph(root / "slow")
    with ServerThread(root, max_concurrency=1, max_queue=1, max_queue_wait_s=5.0) as server:
        request = pb.ModelInferRequest(model_name="slow")
        request.inputs.add(name="x", datatype="FP32", shape=[ROWS, WIDTH])
        request.raw_input_contents.append(np.ones((ROWS, WIDTH), np.float32).tobytes())
        channel = grpc.insecure_channel(server.url)
        infer = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer",
            request_serializer=pb.ModelInferRequest.SerializeToString,
            response_deserializer=pb.ModelInferResponse.FromString,
        )
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
        for _ in range(200):  # until both are admitted or queued
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
