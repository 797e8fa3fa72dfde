"""The request span: opened by the inference core, child of the caller's W3C ``traceparent``.

The span carries the graph, its version and the request id, plus the attributes the front door
contributes for its protocol's semantic conventions (``InferCall.span_attributes``: ``rpc.system``,
``rpc.service``, ``rpc.method`` for gRPC). It is named as those conventions say: ``package.Service/
Method`` for an RPC (``inference.GRPCInferenceService/ModelInfer``), else ``infer <graph>``.
When sampled, the executor gets a node-span observer (``engine.observability.tracing.NodeSpans``,
handed in by the bootstrap) that records one child span per executed node."""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from engine.interfaces import Observer
from engine.repository import ServedGraph
from engine.serving.call import InferCall

ObserverFactory = Callable[[], Observer]
NodeObserver = Callable[[trace.Tracer, Context, int, str, Mapping[str, Mapping[str, str | int]]], Observer]
"""Makes the per-request node-span observer: (tracer, parent context, epoch ns, version, node attributes)."""


def span_name(attributes: Mapping[str, str | int], graph: str) -> str:
    """``package.Service/Method`` from the door's RPC attributes (either convention), else
    ``infer <graph>``."""
    method = str(attributes.get("rpc.method", ""))
    if "/" in method:  # the stable conventions' fully qualified method
        return method
    if "rpc.service" in attributes and method:
        return f"{attributes['rpc.service']}/{method}"
    return f"infer {graph}"


class RequestTracing:
    """Opens ``infer <graph>`` spans and hands the executor a node-span observer when sampled."""

    def __init__(self, tracer: trace.Tracer, node_observer: NodeObserver) -> None:
        self.tracer = tracer
        self._node_observer = node_observer
        self._propagator = TraceContextTextMapPropagator()
        self._node_attributes: weakref.WeakKeyDictionary[ServedGraph, dict[str, dict[str, str | int]]] = (
            weakref.WeakKeyDictionary()
        )

    @contextmanager
    def request_span(
        self, served: ServedGraph, call: InferCall[Any]
    ) -> Iterator[tuple[trace.Span, ObserverFactory | None]]:
        carrier = {key.lower(): value for key, value in call.headers() if isinstance(value, str)}
        parent = self._propagator.extract(carrier)
        attributes: dict[str, str | int] = {
            **call.span_attributes(),
            "engine.graph": served.name,
            "engine.graph.version": served.version,
        }
        if call.request_id:
            attributes["engine.request_id"] = call.request_id
        with self.tracer.start_as_current_span(
            span_name(attributes, served.name), context=parent, kind=SpanKind.SERVER, attributes=attributes
        ) as span:
            factory = None
            if span.is_recording():
                context = trace.set_span_in_context(span)
                static = self._attributes(served)

                def factory() -> Observer:  # made right before the plan runs, so times line up
                    return self._node_observer(self.tracer, context, time.time_ns(), served.version, static)

            yield span, factory

    def _attributes(self, served: ServedGraph) -> dict[str, dict[str, str | int]]:
        found = self._node_attributes.get(served)
        if found is None:
            found = {}
            for node in served.graph.plan.nodes:
                attrs: dict[str, str | int] = {
                    "engine.node.kind": node.kind,
                    "engine.node.detail": node.detail[:200],
                }
                if node.model_sha256:
                    attrs["engine.model.sha256"] = node.model_sha256
                if node.name in served.sources:  # a registry version or pinned URL
                    attrs["engine.model.source"] = served.sources[node.name]
                found[node.name] = attrs
            self._node_attributes[served] = found
        return found
