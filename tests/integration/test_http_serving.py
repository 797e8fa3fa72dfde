"""The HTTP door and gRPC streams share the gRPC door's edges: tokens, TLS, admission (429 with
Retry-After), drain (503 for new calls, in-flight ones finish, streams end UNAVAILABLE), the
request log and metrics labelled by protocol, and the caller's W3C traceparent."""

from __future__ import annotations

import asyncio
import gzip
import json
import queue
import shutil
import ssl
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from engine.observability.log_reader import read_records
from engine.protocol.generated.inference import grpc_service_pb2 as pb
from tests.adapters.proxy import StallingProxy, stalling_store
from tests.integration.held_graph import held_repository
from tests.integration.slow_model import WIDTH
from tests.integration.test_security import certs  # noqa: F401 - the module's certificate fixture
from tests.server_thread import ServerThread

QUICK = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [0, 1, 2, 3]}]}
HELD = {
    "inputs": [
        {"name": "x", "datatype": "FP32", "shape": [1, WIDTH], "data": [1.0] * WIDTH},
        {"name": "k", "datatype": "BYTES", "shape": [1, 1], "data": ["k0"]},
    ]
}


def _held_message() -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="slow", id="held")
    request.inputs.add(name="x", datatype="FP32", shape=[1, WIDTH])
    request.inputs.add(name="k", datatype="BYTES", shape=[1, 1])
    request.raw_input_contents.append(np.ones((1, WIDTH), np.float32).tobytes())
    request.raw_input_contents.append(len(b"k0").to_bytes(4, "little") + b"k0")
    return request


@pytest.fixture(scope="module")
def quick_graphs(tmp_path_factory: pytest.TempPathFactory, example_graphs: Path) -> Path:
    root = tmp_path_factory.mktemp("graphs")
    shutil.copytree(example_graphs / "quickstart", root / "quickstart")
    return root


def _wait_for(condition: Any, what: str, seconds: float = 30.0) -> None:
    end = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def test_tokens_gate_http_paths_but_not_health(quick_graphs: Path, tmp_path: Path) -> None:
    (tmp_path / "infer.tokens").write_text("infer-secret\n")
    (tmp_path / "admin.tokens").write_text("admin-secret\n")
    files = {
        "auth_token_file": str(tmp_path / "infer.tokens"),
        "admin_token_file": str(tmp_path / "admin.tokens"),
    }
    with (
        ServerThread(quick_graphs, **files) as server,
        httpx.Client(base_url=f"http://{server.http_url}") as http,
    ):
        assert http.get("/v2/health/ready").status_code == 200  # probes need no token
        assert http.get("/v2/health/live").status_code == 200
        missing = http.post("/v2/models/quickstart/infer", json=QUICK)
        assert missing.status_code == 401 and missing.headers["WWW-Authenticate"].startswith("Bearer")
        assert "missing credentials" in missing.json()["error"]
        wrong = http.get("/v2/models/quickstart", headers={"Authorization": "Bearer guess"})
        assert wrong.status_code == 401 and wrong.json()["error"] == "invalid credentials"
        infer = {"Authorization": "Bearer infer-secret"}
        assert http.post("/v2/models/quickstart/infer", json=QUICK, headers=infer).status_code == 200
        for method, path in (("POST", "/v2/repository/models/quickstart/load"), ("GET", "/v2/engine/graphs")):
            denied = http.request(method, path, headers=infer)
            assert denied.status_code == 403, path
        admin = {"Authorization": "Bearer admin-secret"}
        assert http.post("/v2/models/quickstart/infer", json=QUICK, headers=admin).status_code == 200
        assert http.get("/v2/engine/graphs", headers=admin).status_code == 200
        # a stream is checked once, when it opens
        channel = grpc.insecure_channel(server.url)
        stream = channel.stream_stream(
            "/inference.GRPCInferenceService/ModelStreamInfer",
            request_serializer=pb.ModelInferRequest.SerializeToString,
            response_deserializer=pb.ModelStreamInferResponse.FromString,
        )
        message = pb.ModelInferRequest(model_name="quickstart")
        message.inputs.add(name="x", datatype="FP32", shape=[1, 4])
        message.raw_input_contents.append(np.zeros((1, 4), np.float32).tobytes())
        with pytest.raises(grpc.RpcError) as refused:
            list(stream(iter([message]), timeout=10))
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        answers = list(
            stream(iter([message]), timeout=10, metadata=(("authorization", "Bearer infer-secret"),))
        )
        assert len(answers) == 1 and answers[0].error_message == ""
        channel.close()


def test_a_body_above_the_limit_is_413(quick_graphs: Path) -> None:
    with ServerThread(quick_graphs, max_message_bytes=4096) as server:
        big = {
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [0.0] * 4}],
            "id": "x" * 8192,
        }
        answer = httpx.post(f"http://{server.http_url}/v2/models/quickstart/infer", json=big)
        assert answer.status_code == 413 and "above the limit of 4096" in answer.json()["error"]
        bomb = gzip.compress(json.dumps({"id": "x" * 100_000, "inputs": []}).encode())  # 161 bytes sent
        answer = httpx.post(
            f"http://{server.http_url}/v2/models/quickstart/infer",
            content=bomb,
            headers={"Content-Encoding": "gzip"},
        )
        assert answer.status_code == 413, "the limit holds for the decompressed body"


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_tls_serves_https_with_the_grpc_certificate(quick_graphs: Path, certs: Path) -> None:  # noqa: F811
    tls = {"tls_cert": str(certs / "server.pem"), "tls_key": str(certs / "server.key")}
    with ServerThread(quick_graphs, **tls) as server:
        port = server.server.http_port
        with httpx.Client(verify=ssl.create_default_context(cafile=str(certs / "ca.pem"))) as https:
            answer = https.post(f"https://127.0.0.1:{port}/v2/models/quickstart/infer", json=QUICK)
            assert answer.status_code == 200 and answer.json()["outputs"][0]["name"] == "prob"
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/v2/health/live", timeout=5)  # plaintext is refused


def test_shed_calls_are_429_with_retry_after_and_drain_is_503(tmp_path: Path) -> None:
    with stalling_store(6379) as (proxy, proxy_loop):
        root = tmp_path / "graphs"
        held_repository(root, proxy.port, name="slow")
        _shed_then_drain(root, proxy, proxy_loop)


def _shed_then_drain(root: Path, proxy: StallingProxy, proxy_loop: Any) -> None:
    server = ServerThread(root, max_concurrency=1, max_queue=0)
    server.start()
    try:
        base = f"http://{server.http_url}"
        with httpx.Client(base_url=base, timeout=60) as http:
            assert http.post("/v2/models/slow/infer", json=HELD).status_code == 200  # connected to the store
            proxy_loop.soon(proxy.stall)
            state = server.server.state
            held: queue.Queue[httpx.Response] = queue.Queue()
            threading.Thread(
                target=lambda: held.put(httpx.post(f"{base}/v2/models/slow/infer", json=HELD, timeout=60))
            ).start()
            _wait_for(lambda: state.admission.active == 1, "the held call")

            shed = http.post("/v2/models/slow/infer", json=HELD)
            assert shed.status_code == 429 and "capacity" in shed.json()["error"]
            assert int(shed.headers["Retry-After"]) >= 1 and int(shed.headers["Retry-After-Ms"]) >= 10

            # A stream whose message is held too: it is answered, then the stream ends UNAVAILABLE.
            channel = grpc.insecure_channel(server.url)
            stream = channel.stream_stream(
                "/inference.GRPCInferenceService/ModelStreamInfer",
                request_serializer=pb.ModelInferRequest.SerializeToString,
                response_deserializer=pb.ModelStreamInferResponse.FromString,
            )
            messages: queue.Queue[pb.ModelInferRequest | None] = queue.Queue()
            answers = stream(iter(messages.get, None), timeout=60)
            state.admission.limit = 2  # room for the stream's message beside the held HTTP call
            messages.put(_held_message())
            _wait_for(lambda: state.admission.active == 2, "the held stream message")

            stopping = asyncio.run_coroutine_threadsafe(server.server.stop(30.0), server.loop)
            _wait_for(lambda: state.draining, "the drain")
            refused = http.post("/v2/models/slow/infer", json=HELD)
            assert refused.status_code == 503 and "draining" in refused.json()["error"]
            assert http.get("/v2/health/ready").status_code == 503
            proxy_loop.soon(proxy.resume)
            assert held.get(timeout=60).status_code == 200  # the in-flight call finished within grace
            first = next(answers)
            assert first.error_message == "" and first.infer_response.id == "held"
            with pytest.raises(grpc.RpcError) as ended:
                next(answers)
            assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "draining" in (ended.value.details() or "")
            messages.put(None)
            channel.close()
            stopping.result(60)
    finally:
        server.stop()


def test_request_log_metrics_and_traces_are_per_protocol(quick_graphs: Path, tmp_path: Path) -> None:
    root = tmp_path / "graphs"
    shutil.copytree(quick_graphs, root)
    quick = root / "quickstart" / "graph.yaml"
    quick.write_text(quick.read_text() + "logging: {sample: 1.0}\n")
    logs = tmp_path / "logs"
    exporter = InMemorySpanExporter()
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    server = ServerThread(
        root,
        request_log={"sink": "jsonl", "directory": str(logs)},
        span_exporter=exporter,
        trace_sample_ratio=1.0,
    )
    with server:
        headers = {"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"}
        response = httpx.post(
            f"http://{server.http_url}/v2/models/quickstart/infer",
            json={**QUICK, "id": "over-http"},
            headers=headers,
        )
        assert response.status_code == 200
        channel = grpc.insecure_channel(server.url)
        stream = channel.stream_stream(
            "/inference.GRPCInferenceService/ModelStreamInfer",
            request_serializer=pb.ModelInferRequest.SerializeToString,
            response_deserializer=pb.ModelStreamInferResponse.FromString,
        )
        message = pb.ModelInferRequest(model_name="quickstart", id="over-stream")
        message.inputs.add(name="x", datatype="FP32", shape=[1, 4])
        message.raw_input_contents.append(np.zeros((1, 4), np.float32).tobytes())
        assert [a.infer_response.id for a in stream(iter([message, message]), timeout=30)] == [
            "over-stream"
        ] * 2
        channel.close()
        text = urllib.request.urlopen(
            f"http://127.0.0.1:{server.server.metrics_port}/metrics", timeout=5
        ).read()
    samples = {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
        if s.name == "engine_protocol_requests_total"
    }
    assert samples[(("code", "OK"), ("protocol", "http"))] == 1
    assert samples[(("code", "OK"), ("protocol", "grpc-stream"))] == 2
    protocols = sorted((r["id"], r["protocol"]) for r in read_records(logs))
    assert protocols == [
        ("over-http", "http"),
        ("over-stream", "grpc-stream"),
        ("over-stream", "grpc-stream"),
    ]
    spans = [s for s in exporter.get_finished_spans() if s.context.trace_id == int(trace_id, 16)]
    http_spans = [s for s in spans if s.attributes and s.attributes.get("http.route")]
    assert http_spans and http_spans[0].attributes["http.response.status_code"] == 200
    streamed = [
        s
        for s in exporter.get_finished_spans()
        if (s.attributes or {}).get("rpc.method") == "ModelStreamInfer"
    ]
    assert len(streamed) == 2  # one request span per message
