"""The request span: opened at the protocol edge, child of the caller's W3C traceparent."""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from engine.interfaces import Observer
from engine.repository import ServedGraph

ObserverFactory = Callable[[], Observer]
NodeObserver = Callable[[trace.Tracer, Context, int, str, Mapping[str, Mapping[str, str | int]]], Observer]
"""Makes the per-request node-span observer: (tracer, parent context, epoch ns, version, node attributes)."""


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
        self, served: ServedGraph, request_id: str, metadata: Sequence[tuple[str, str | bytes]] | None
    ) -> Iterator[tuple[trace.Span, ObserverFactory | None]]:
        carrier = {key: value for key, value in metadata or () if isinstance(value, str)}
        parent = self._propagator.extract(carrier)
        attributes: dict[str, str] = {
            "rpc.system": "grpc",
            "rpc.service": "inference.GRPCInferenceService",
            "rpc.method": "ModelInfer",
            "engine.graph": served.name,
            "engine.graph.version": served.version,
        }
        if request_id:
            attributes["engine.request_id"] = request_id
        with self.tracer.start_as_current_span(
            f"infer {served.name}", context=parent, kind=SpanKind.SERVER, attributes=attributes
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
                found[node.name] = attrs
            self._node_attributes[served] = found
        return found
