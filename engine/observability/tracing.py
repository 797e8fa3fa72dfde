"""OpenTelemetry tracing: the one module that sets up the SDK, and node spans.

Engine code uses the OpenTelemetry *API* with a tracer handed in by the server
bootstrap; with tracing off no tracer exists and the request path does no
tracing work at all. A request span (``infer <graph>``, a child of the caller's
W3C ``traceparent``) is opened at the protocol edge; ``NodeSpans`` receives the
executor's ``NodeEvent``s and records one child span per executed node, with
the node's exact start and end times (branches not taken run no node, so they
get no span).

Exporters: ``none`` (default: no SDK, no spans), ``discard`` (spans are created
and sampled but exported nowhere — for measuring tracing's own cost),
``console``, ``otlp`` (OTLP over gRPC to ``trace_endpoint``). Sampling is
parent-based: a caller's sampled flag wins; root spans are sampled at
``sample_ratio``.

The standard ``OTEL_*`` variables work as the ecosystem expects: ``OTEL_SERVICE_NAME`` and
``OTEL_RESOURCE_ATTRIBUTES`` name the service (``graph-engine`` only when neither does);
``OTEL_TRACES_EXPORTER`` (``otlp``, ``console``, ``none``) picks the exporter when the engine's own
``trace_exporter`` is left at ``none``; ``OTEL_EXPORTER_OTLP_ENDPOINT`` /
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` win over the default ``trace_endpoint``, and the exporter
then also reads ``OTEL_EXPORTER_OTLP_HEADERS``, ``…_CERTIFICATE``, ``…_INSECURE`` and
``…_COMPRESSION`` itself (TLS to the collector for an ``https://`` endpoint or a certificate);
``OTEL_TRACES_SAMPLER`` (with ``OTEL_TRACES_SAMPLER_ARG``) replaces the ratio sampler.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind, Status, StatusCode

from engine.interfaces import FEATURE_STATUS_NAMES, NodeEvent
from engine.shadow.runner import ShadowRunEvent

EXPORTERS = ("none", "discard", "console", "otlp")
DEFAULT_ENDPOINT = "127.0.0.1:4317"
DEFAULT_SERVICE = "graph-engine"


@dataclass(frozen=True, slots=True)
class TracingSettings:
    exporter: str = "none"
    endpoint: str = DEFAULT_ENDPOINT
    sample_ratio: float = 1.0
    service_name: str = DEFAULT_SERVICE


def resource(settings: TracingSettings, environ: Mapping[str, str]) -> Resource:
    """The service's resource: ``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES`` when given."""
    named = environ.get("OTEL_SERVICE_NAME") or "service.name=" in environ.get("OTEL_RESOURCE_ATTRIBUTES", "")
    fallback = {} if named else {"service.name": settings.service_name}
    # Resource.create reads the two variables itself (from os.environ); the fallback loses to them
    return Resource.create(fallback) if environ is os.environ else _resource_from(environ, fallback)


def _resource_from(environ: Mapping[str, str], fallback: Mapping[str, str]) -> Resource:
    attributes: dict[str, str] = dict(fallback)
    for pair in environ.get("OTEL_RESOURCE_ATTRIBUTES", "").split(","):
        key, sep, value = pair.partition("=")
        if sep and key.strip():
            attributes[key.strip()] = value.strip()
    if environ.get("OTEL_SERVICE_NAME"):
        attributes["service.name"] = environ["OTEL_SERVICE_NAME"]
    return Resource(attributes)


def exporter_name(settings: TracingSettings, environ: Mapping[str, str]) -> str:
    """The exporter to use: the engine's setting, else ``OTEL_TRACES_EXPORTER`` (its first entry)."""
    if settings.exporter != "none":
        return settings.exporter
    chosen = environ.get("OTEL_TRACES_EXPORTER", "none").split(",")[0].strip().lower() or "none"
    if chosen not in ("none", "console", "otlp"):
        raise ValueError(f"OTEL_TRACES_EXPORTER '{chosen}' is not supported (otlp, console or none)")
    return chosen


def otlp_arguments(settings: TracingSettings, environ: Mapping[str, str]) -> dict[str, object]:
    """Keyword arguments for the OTLP exporter: none when ``OTEL_EXPORTER_OTLP_*`` name the collector
    (the exporter reads them: endpoint, headers, certificate, insecure, compression)."""
    from_env = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if from_env and settings.endpoint == DEFAULT_ENDPOINT:
        return {}
    secure = bool(
        environ.get("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE") or environ.get("OTEL_EXPORTER_OTLP_CERTIFICATE")
    ) or settings.endpoint.startswith("https://")
    return {"endpoint": settings.endpoint, "insecure": not secure}


def setup_tracing(
    settings: TracingSettings,
    *,
    exporter: SpanExporter | None = None,
    environ: Mapping[str, str] | None = None,
) -> TracerProvider | None:
    """A configured provider, or None when tracing is off. ``exporter`` overrides (tests)."""
    env = os.environ if environ is None else environ
    if settings.exporter not in EXPORTERS:
        raise ValueError(f"unknown trace exporter '{settings.exporter}' (one of {', '.join(EXPORTERS)})")
    chosen = exporter_name(settings, env)
    if chosen == "none" and exporter is None:
        return None
    if not 0.0 <= settings.sample_ratio <= 1.0:
        raise ValueError(f"trace sample ratio must be within [0, 1], got {settings.sample_ratio}")
    sampler = (
        None if env.get("OTEL_TRACES_SAMPLER") else ParentBased(TraceIdRatioBased(settings.sample_ratio))
    )
    provider = TracerProvider(resource=resource(settings, env), sampler=sampler)  # None: the SDK reads env
    if exporter is None and chosen == "console":
        exporter = ConsoleSpanExporter()
    elif exporter is None and chosen == "otlp":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(**otlp_arguments(settings, env))  # type: ignore[arg-type]
    if exporter is not None:
        # Batching exports off the request path; a full queue drops spans (counted by the SDK).
        provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=8192))
    return provider


class NodeSpans:
    """An ``Observer`` that records one span per executed node under a request span.

    ``epoch_ns`` is the wall-clock time at which the executor started (its event
    offsets are relative to that moment); ``attributes`` holds each node's static
    attributes (kind, model sha256, …), computed once per graph version.
    """

    __slots__ = ("_attributes", "_context", "_epoch_ns", "_tracer", "_version")

    def __init__(
        self,
        tracer: trace.Tracer,
        parent: Context,
        epoch_ns: int,
        version: str,
        attributes: Mapping[str, Mapping[str, str | int]],
    ) -> None:
        self._tracer = tracer
        self._context = parent
        self._epoch_ns = epoch_ns
        self._version = version
        self._attributes = attributes

    def on_node(self, event: NodeEvent) -> None:
        start = self._epoch_ns + event.start_ns
        span = self._tracer.start_span(
            f"node {event.node}",
            context=self._context,
            kind=SpanKind.INTERNAL,
            start_time=start,
            attributes=self._attributes.get(event.node, {}),
        )
        span.set_attribute("engine.graph.version", self._version)
        span.set_attribute("engine.rows", event.rows)
        if event.queue_ns:  # a model run that waited for a pool thread (or for its batch) before computing
            span.set_attribute("engine.thread_pool.wait_us", event.queue_ns / 1000)
        if event.batch_size:  # a batching model node: the rows its run held, this request's and others'
            span.set_attribute("engine.batch_size", event.batch_size)
        if event.feature_status is not None:  # a features node: where its values came from
            span.set_attribute("engine.features.source", event.source or "")
            counts = _status_counts(event.feature_status)
            for name, count in counts.items():
                span.set_attribute(f"engine.features.{name}", count)
            span.set_attribute("engine.features.cache_hit", counts.get("cached", 0) > 0)
        if event.branch:
            for label, rows in event.branch.items():
                span.set_attribute(f"engine.branch.{label}.rows", rows)
            span.set_attribute("engine.branch.taken", [k for k, v in event.branch.items() if v])
        if event.error is not None:
            span.set_status(Status(StatusCode.ERROR, event.error))
            span.set_attribute("error.type", event.error.split(":", 1)[0][:200])
        span.end(end_time=start + event.duration_ns)


def _status_counts(statuses: dict[str, np.ndarray]) -> dict[str, int]:
    """Values per ``FeatureStatus`` name over every field of a features node (non-zero only)."""
    n = len(FEATURE_STATUS_NAMES)
    total = np.zeros(n, dtype=np.int64)
    for array in statuses.values():
        total += np.bincount(array.reshape(-1), minlength=n)[:n]
    return {name: int(n) for name, n in zip(FEATURE_STATUS_NAMES, total.tolist(), strict=True) if n}


class ShadowSpans:
    """A span per shadow run (``engine.shadow.ShadowPool``'s hook), *linked* to the live request.

    The run happens off the response path, after (or beside) the request span, so it is not its
    child: it starts a trace of its own whose link names the request's span, as OpenTelemetry
    models work caused by a request but not part of it. Runs of requests that were not sampled
    (or not traced) get no span.
    """

    __slots__ = ("_tracer",)

    def __init__(self, tracer: trace.Tracer) -> None:
        self._tracer = tracer

    def capture(self) -> object:
        context = trace.get_current_span().get_span_context()
        return context if context.is_valid and context.trace_flags.sampled else None

    def record(self, event: ShadowRunEvent) -> None:
        if not isinstance(event.link, trace.SpanContext):
            return
        span = self._tracer.start_span(
            f"shadow {event.shadow}",
            context=Context(),  # a root: the live request did not wait for it
            kind=SpanKind.INTERNAL,
            links=[trace.Link(event.link, {"engine.link": "live_request"})],
            start_time=event.start_ns,
            attributes={
                "engine.graph": event.graph,
                "engine.shadow": event.shadow,
                "engine.shadow.target": event.target or "(graph)",
                "engine.shadow.outcome": event.status,
            },
        )
        if event.status != "ok":
            span.set_status(Status(StatusCode.ERROR, event.error or event.status))
        span.end(end_time=event.end_ns)
