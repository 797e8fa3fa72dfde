"""Traces and metrics from a real server: spans in memory and over real OTLP, /metrics over HTTP."""

from __future__ import annotations

import asyncio
import signal
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.test_lifecycle import SERVING, EngineProcess
from tests.server_thread import ServerThread

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
REQUEST_SPAN = "inference.GRPCInferenceService/ModelInfer"  # OpenTelemetry's RPC span name
PARENT_SPAN = "00f067aa0ba902b7"


def _fraud_inputs(amounts: list[float]) -> list[triton.InferInput]:
    amount = np.array([[a] for a in amounts], np.float32)
    user_id = np.array([[b"u0108"]] * len(amounts), dtype=object)  # a row of graphs/fraud/users.csv
    txn = np.tile(np.array([[0.7, 1, 22]], np.float32), (len(amounts), 1))
    out = []
    for name, array in (("amount", amount), ("user_id", user_id), ("txn", txn)):
        tensor = triton.InferInput(name, list(array.shape), "BYTES" if name == "user_id" else "FP32")
        tensor.set_data_from_numpy(array)
        out.append(tensor)
    return out


@pytest.fixture(scope="module")
def traced(example_graphs: Path) -> Iterator[tuple[ServerThread, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    with ServerThread(example_graphs, span_exporter=exporter, trace_sample_ratio=1.0) as server:
        yield server, exporter


def _spans_of(exporter: InMemorySpanExporter, trace_id: int, wait_s: float = 5.0) -> list:  # type: ignore[type-arg]
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:  # the batch processor exports off the request path
        spans = [s for s in exporter.get_finished_spans() if s.context.trace_id == trace_id]
        if any(s.name == REQUEST_SPAN for s in spans):
            return spans
        time.sleep(0.05)
    return [s for s in exporter.get_finished_spans() if s.context.trace_id == trace_id]


def test_request_span_continues_the_callers_trace_with_one_span_per_executed_node(traced) -> None:  # type: ignore[no-untyped-def]
    server, exporter = traced
    client = triton.InferenceServerClient(server.url)
    client.infer(
        "fraud", _fraud_inputs([50.0, 20.0]), headers={"traceparent": f"00-{TRACE_ID}-{PARENT_SPAN}-01"}
    )
    spans = _spans_of(exporter, int(TRACE_ID, 16))
    (request,) = [s for s in spans if s.name == REQUEST_SPAN]
    assert format(request.parent.span_id, "016x") == PARENT_SPAN
    assert request.attributes["engine.graph.version"] == "1"
    rpc = {k: v for k, v in request.attributes.items() if k.startswith("rpc.")}
    assert rpc == {  # OpenTelemetry's RPC conventions, on a successful call too
        "rpc.system": "grpc",
        "rpc.service": "inference.GRPCInferenceService",
        "rpc.method": "ModelInfer",
        "rpc.grpc.status_code": 0,
    }
    nodes = {s.name: s for s in spans if s.name.startswith("node ")}
    # Both rows are small amounts: 'deep' ran on no row, so it has no span.
    assert set(nodes) == {
        f"node {n}"
        for n in ("user", "log_amount", "x", "ip_risk", "light", "risk_route", "score", "decision")
    }
    for span in nodes.values():
        assert span.parent.span_id == request.context.span_id
        assert request.start_time <= span.start_time <= span.end_time <= request.end_time
        assert span.attributes["engine.rows"] == 2
    ip = nodes["node ip_risk"].attributes
    assert ip["engine.node.kind"] == "model" and len(ip["engine.model.sha256"]) == 64
    route = nodes["node risk_route"].attributes
    assert route["engine.branch.light.rows"] == 2 and route["engine.branch.deep.rows"] == 0
    assert list(route["engine.branch.taken"]) == ["light"]
    client.close()


def test_a_failed_request_span_carries_the_status(traced) -> None:  # type: ignore[no-untyped-def]
    server, exporter = traced
    client = triton.InferenceServerClient(server.url)
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    with pytest.raises(triton.InferenceServerException):
        client.infer(
            "fraud", _fraud_inputs([1.0])[:1], headers={"traceparent": f"00-{trace_id}-b7ad6b7169203331-01"}
        )
    (request,) = [s for s in _spans_of(exporter, int(trace_id, 16)) if s.name == REQUEST_SPAN]
    assert request.attributes["rpc.grpc.status_code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert not request.status.is_ok
    client.close()


def test_an_unsampled_caller_is_not_traced(traced) -> None:  # type: ignore[no-untyped-def]
    server, exporter = traced
    client = triton.InferenceServerClient(server.url)
    trace_id = "11111111111111111111111111111111"
    client.infer("fraud", _fraud_inputs([5.0]), headers={"traceparent": f"00-{trace_id}-2222222222222222-00"})
    time.sleep(0.3)
    assert not [s for s in exporter.get_finished_spans() if s.context.trace_id == int(trace_id, 16)]
    client.close()


class _Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    """A real OTLP/gRPC trace receiver: records every span name it is sent."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.trace_ids: set[str] = set()
        self.services: set[str] = set()
        self.metadata: list[dict[str, str]] = []

    async def Export(self, request, context):  # type: ignore[no-untyped-def]
        self.metadata.append({k: v for k, v in context.invocation_metadata() if isinstance(v, str)})
        for resource_spans in request.resource_spans:
            for attribute in resource_spans.resource.attributes:
                if attribute.key == "service.name":
                    self.services.add(attribute.value.string_value)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.names.append(span.name)
                    self.trace_ids.add(span.trace_id.hex())
        return trace_service_pb2.ExportTraceServiceResponse()


@pytest.mark.parametrize("configured_by", ["engine", "otel"])
def test_spans_reach_a_real_otlp_receiver(
    example_graphs: Path, configured_by: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver = _Receiver()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def start() -> tuple[grpc.aio.Server, int]:
        otlp = grpc.aio.server()
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, otlp)
        port = otlp.add_insecure_port("127.0.0.1:0")
        await otlp.start()
        return otlp, port

    otlp, port = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    try:
        if configured_by == "engine":
            server = ServerThread(example_graphs, trace_exporter="otlp", trace_endpoint=f"127.0.0.1:{port}")
        else:  # only the standard variables, as an OpenTelemetry operator or collector sidecar sets them
            monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
            monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
            monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=acme")
            monkeypatch.setenv("OTEL_SERVICE_NAME", "fraud-scorer")
            server = ServerThread(example_graphs)
        with server:
            client = triton.InferenceServerClient(server.url)
            client.infer(
                "fraud", _fraud_inputs([5000.0]), headers={"traceparent": f"00-{TRACE_ID}-{PARENT_SPAN}-01"}
            )
            client.close()
        # Stopping the server flushes the exporter.
        assert REQUEST_SPAN in receiver.names and "node deep" in receiver.names
        assert "node light" not in receiver.names
        assert TRACE_ID in receiver.trace_ids
        if configured_by == "engine":
            assert receiver.services == {"graph-engine"}
        else:
            assert receiver.services == {"fraud-scorer"}  # OTEL_SERVICE_NAME is not overridden
            assert all(m.get("x-tenant") == "acme" for m in receiver.metadata)
    finally:
        asyncio.run_coroutine_threadsafe(otlp.stop(0), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_count_what_was_sent(example_graphs: Path) -> None:
    with ServerThread(example_graphs) as server:
        client = triton.InferenceServerClient(server.url)
        for _ in range(5):
            client.infer("fraud", _fraud_inputs([50.0, 2000.0, 30.0]))
        for _ in range(2):
            with pytest.raises(triton.InferenceServerException):
                client.infer("fraud", _fraud_inputs([1.0])[:1])
        with pytest.raises(triton.InferenceServerException):
            client.infer("nope", _fraud_inputs([1.0]))
        samples = _scrape(server.server.metrics_port)
        client.close()
    ok = (("code", "OK"), ("graph", "fraud"), ("version", "1"))
    bad = (("code", "INVALID_ARGUMENT"), ("graph", "fraud"), ("version", "1"))
    assert samples[("engine_requests_total", ok)] == 5
    assert samples[("engine_requests_total", bad)] == 2
    assert samples[("engine_requests_total", (("code", "NOT_FOUND"), ("graph", ""), ("version", "")))] == 1
    assert samples[("engine_request_duration_seconds_count", ok)] == 5
    assert samples[("engine_rows_total", (("graph", "fraud"), ("version", "1")))] == 15

    def node(name: str, kind: str) -> tuple[tuple[str, str], ...]:
        return (("graph", "fraud"), ("kind", kind), ("node", name), ("version", "1"))

    assert samples[("engine_node_duration_seconds_count", node("ip_risk", "model"))] == 5
    assert samples[("engine_node_duration_seconds_count", node("deep", "model"))] == 5
    assert samples[("engine_node_errors_total", node("ip_risk", "model"))] == 0
    assert samples[("engine_graph_ready", (("graph", "fraud"), ("version", "1")))] == 1
    assert samples[("engine_in_flight_requests", ())] == 0
    assert ("process_resident_memory_bytes", ()) in samples
    # the request log's counters exist without a sink, at 0: one name for alerts and load tests
    assert samples[("engine_request_log_records_total", (("outcome", "dropped"),))] == 0
    assert ("engine_event_loop_lag_seconds", ()) in samples
    for reason in ("queue_full", "live_pressure", "back_off", "draining"):
        assert samples[("engine_shadow_shed_total", (("reason", reason),))] == 0


def test_shadow_latency_is_a_histogram_that_adds_up(example_graphs: Path) -> None:
    with ServerThread(example_graphs) as server:
        client = triton.InferenceServerClient(server.url)
        for _ in range(6):
            client.infer("fraud", _fraud_inputs([2000.0, 50.0]))  # one row takes deep, and its shadow
        client.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # shadows finish off the response path
            samples = _scrape(server.server.metrics_port)
            runs = samples.get(
                (
                    "engine_shadow_requests_total",
                    (("graph", "fraud"), ("outcome", "run"), ("shadow", "deep_v2"), ("target", "deep")),
                ),
                0,
            )
            if runs == 6:
                break
            time.sleep(0.05)
    assert runs == 6
    for side in ("live", "shadow"):
        labels = (("graph", "fraud"), ("shadow", "deep_v2"), ("side", side))
        assert samples[("engine_shadow_latency_seconds_count", labels)] == 6
        assert (
            samples[("engine_shadow_latency_seconds_bucket", (labels[0], ("le", "+Inf"), *labels[1:]))] == 6
        )
        buckets = sorted(
            (float(dict(k)["le"]), v)
            for (name, k), v in samples.items()
            if name == "engine_shadow_latency_seconds_bucket" and dict(k)["side"] == side
        )
        assert [v for _, v in buckets] == sorted(v for _, v in buckets)  # cumulative
        assert 0 < samples[("engine_shadow_latency_seconds_sum", labels)] < 6 * 10
    assert not any(name == "engine_shadow_latency_p99_seconds" for name, _ in samples)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_workers_metrics_are_merged_with_a_worker_label(example_graphs: Path) -> None:
    port, metrics_port = _free_port(), _free_port()
    engine = EngineProcess(
        str(example_graphs), "--port", str(port), "--workers", "2", "--metrics-port", str(metrics_port)
    )
    try:
        engine.wait_for(SERVING, count=2)
        for _ in range(20):  # fresh connections spread over both workers
            client = triton.InferenceServerClient(f"127.0.0.1:{port}")
            client.infer("fraud", _fraud_inputs([10.0]))
            client.close()
        samples = _scrape(metrics_port)
    finally:
        engine.proc.send_signal(signal.SIGTERM)  # the parent drains and stops its workers
        assert engine.proc.wait(30) == 0
        engine.stop()
    workers = {dict(labels).get("worker") for (name, labels) in samples if name == "engine_graph_ready"}
    assert workers == {"0", "1"}
    served = sum(
        v
        for (name, labels), v in samples.items()
        if name == "engine_requests_total" and dict(labels).get("code") == "OK"
    )
    assert served == 20


def test_each_shadow_run_has_a_span_linked_to_its_live_request(traced) -> None:  # type: ignore[no-untyped-def]
    server, exporter = traced
    trace_id = "5bf92f3577b34da6a3ce929d0e0e4737"
    client = triton.InferenceServerClient(server.url)
    client.infer("fraud", _fraud_inputs([5000.0]), headers={"traceparent": f"00-{trace_id}-{PARENT_SPAN}-01"})
    client.close()
    (request,) = [s for s in _spans_of(exporter, int(trace_id, 16)) if s.name == REQUEST_SPAN]
    deadline = time.monotonic() + 10
    shadows: list = []  # type: ignore[type-arg]
    while time.monotonic() < deadline and not shadows:  # the shadow finishes off the response path
        shadows = [
            s
            for s in exporter.get_finished_spans()
            if s.name == "shadow deep_v2"
            and any(link.context.span_id == request.context.span_id for link in s.links)
        ]
        time.sleep(0.05)
    (shadow,) = shadows
    assert shadow.parent is None  # its own trace: the live request did not wait for it
    assert shadow.attributes["engine.shadow.target"] == "deep"
    assert shadow.attributes["engine.shadow.outcome"] == "ok"
    (link,) = shadow.links
    assert format(link.context.trace_id, "032x") == trace_id
