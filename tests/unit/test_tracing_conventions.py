"""Tracing as the OpenTelemetry ecosystem expects: RPC semantic conventions (old, stable, both) and
the standard OTEL_* variables."""

from __future__ import annotations

import pytest

from engine.errors import Status
from engine.observability.tracing import (
    TracingSettings,
    exporter_name,
    otlp_arguments,
    resource,
    setup_tracing,
)
from engine.protocol.calls import rpc_attributes, semconv, status_attributes
from engine.serving.tracing import span_name

SERVICE = "inference.GRPCInferenceService"


def test_the_stability_opt_in_chooses_the_rpc_conventions() -> None:
    assert semconv({}) == (True, False)
    assert semconv({"OTEL_SEMCONV_STABILITY_OPT_IN": "http, rpc"}) == (False, True)
    assert semconv({"OTEL_SEMCONV_STABILITY_OPT_IN": "rpc,rpc/dup"}) == (True, True)


def test_rpc_attributes_in_each_convention() -> None:
    assert rpc_attributes(SERVICE, "ModelInfer", old=True, new=False) == {
        "rpc.system": "grpc", "rpc.service": SERVICE, "rpc.method": "ModelInfer",
    }  # fmt: skip
    assert rpc_attributes(SERVICE, "ModelInfer", old=False, new=True) == {
        "rpc.system.name": "grpc", "rpc.method": f"{SERVICE}/ModelInfer",
    }  # fmt: skip
    assert status_attributes(Status.OK, old=True, new=True) == {
        "rpc.grpc.status_code": 0, "rpc.response.status_code": "OK",
    }  # fmt: skip
    assert status_attributes(Status.INVALID_ARGUMENT, old=False, new=True) == {
        "rpc.response.status_code": "INVALID_ARGUMENT", "error.type": "INVALID_ARGUMENT",
    }  # fmt: skip


def test_the_request_span_is_named_service_slash_method_in_either_convention() -> None:
    for old, new in ((True, False), (False, True), (True, True)):
        attributes = rpc_attributes(SERVICE, "ModelInfer", old=old, new=new)
        assert span_name(attributes, "fraud") == f"{SERVICE}/ModelInfer"
    assert span_name({}, "fraud") == "infer fraud"  # a door without RPC attributes


def test_otel_service_name_and_resource_attributes_are_not_overridden() -> None:
    settings = TracingSettings()
    assert resource(settings, {}).attributes["service.name"] == "graph-engine"
    assert (
        resource(settings, {"OTEL_SERVICE_NAME": "fraud-scorer"}).attributes["service.name"] == "fraud-scorer"
    )
    named = resource(settings, {"OTEL_RESOURCE_ATTRIBUTES": "service.name=eta,deployment.environment=prod"})
    assert named.attributes["service.name"] == "eta"
    assert named.attributes["deployment.environment"] == "prod"


def test_otel_exporter_variables_choose_the_exporter_and_the_collector() -> None:
    assert exporter_name(TracingSettings(), {}) == "none"
    assert exporter_name(TracingSettings(), {"OTEL_TRACES_EXPORTER": "otlp"}) == "otlp"
    assert exporter_name(TracingSettings(exporter="console"), {"OTEL_TRACES_EXPORTER": "otlp"}) == "console"
    assert otlp_arguments(TracingSettings(), {}) == {"endpoint": "127.0.0.1:4317", "insecure": True}
    # the exporter reads OTEL_EXPORTER_OTLP_* (endpoint, headers, certificate) itself
    assert otlp_arguments(TracingSettings(), {"OTEL_EXPORTER_OTLP_ENDPOINT": "https://collector:4317"}) == {}
    pinned = TracingSettings(endpoint="collector:4317")
    tls = otlp_arguments(pinned, {"OTEL_EXPORTER_OTLP_CERTIFICATE": "/etc/ca.pem"})
    assert tls == {"endpoint": "collector:4317", "insecure": False}


def test_otel_traces_sampler_replaces_the_ratio(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    provider = setup_tracing(TracingSettings(exporter="discard", sample_ratio=1.0))
    assert provider is not None
    try:
        with provider.get_tracer("t").start_as_current_span("root") as span:
            assert not span.is_recording()  # the ratio of 1.0 would have sampled it
    finally:
        provider.shutdown()
    monkeypatch.delenv("OTEL_TRACES_SAMPLER")
    sampled = setup_tracing(TracingSettings(exporter="discard", sample_ratio=1.0))
    assert sampled is not None
    with sampled.get_tracer("t").start_as_current_span("root") as span:
        assert span.is_recording()
    sampled.shutdown()
