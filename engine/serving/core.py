"""``InferenceCore``: the one data plane under every front door.

A front door turns its request into an ``InferCall`` and awaits ``infer``; everything the
call *means* happens here, once, whichever door it came through:

    readiness -> graph and version -> admission -> request span -> decode (timed)
      -> shadows of the whole graph start -> the plan runs (node shadows start inside)
      -> encode (timed) -> statistics -> the request record

A call that fails at any step is counted and recorded with its ``Status``; the exception
goes back to the door, which maps it to its own codes. ``explain`` is the same call with
one more observer. Operations on server state (reload, unload, statistics, shadow
reports, the index) belong to ``engine.serving.admin``. The core knows no protobuf, no gRPC
and no HTTP.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, TypeVar

import numpy as np

from engine.errors import EngineError, Status, status_of
from engine.execution.contracts import enforce
from engine.graph.values.contracts import Violation
from engine.graph.values.logging_policy import LoggingPolicy
from engine.interfaces import EventLog, NodeEvent, Observer, RequestOutcome, RequestRecorder
from engine.repository import GraphRepository, ServedGraph
from engine.serving.call import InferCall, InferResult
from engine.serving.failure import CURRENT_REQUEST_ID, current_trace_id
from engine.serving.rollout import Rollouts, Route
from engine.serving.state import ServingState
from engine.serving.tracing import ObserverFactory, RequestTracing
from engine.shadow.dispatch import ShadowDispatcher
from engine.shadow.outcome import RequestShadows
from engine.shadow.runner import LiveResult

R = TypeVar("R")


class EventCollector:
    """An observer that keeps every node event of one call (``explain``), and the logging policy
    of the version that served it (set by ``infer``), whose redactions ``explain`` applies."""

    __slots__ = ("events", "policy")

    def __init__(self) -> None:
        self.events: list[NodeEvent] = []
        self.policy: LoggingPolicy | None = None

    def on_node(self, event: NodeEvent) -> None:
        self.events.append(event)


class _Both:
    """Hands each event to two observers."""

    __slots__ = ("first", "second")

    def __init__(self, first: Observer, second: Observer) -> None:
        self.first, self.second = first, second

    def on_node(self, event: NodeEvent) -> None:
        self.first.on_node(event)
        self.second.on_node(event)


class InferenceCore:
    """Serves inference calls from every front door (see the module docstring)."""

    def __init__(
        self,
        repository: GraphRepository,
        state: ServingState,
        *,
        dispatcher: ShadowDispatcher | None = None,
        recorder: RequestRecorder | None = None,
        tracing: RequestTracing | None = None,
        rollouts: Rollouts | None = None,
    ) -> None:
        self.repository = repository
        self.rollouts = rollouts
        self.state = state
        self.dispatcher = dispatcher
        self.recorder = recorder
        self.tracing = tracing

    async def infer(self, call: InferCall[R], observer: Observer | None = None) -> R:
        """Serve one call; ``observer`` (explain) sees every node event besides the usual ones."""
        t0 = time.perf_counter_ns()
        life = self.state
        life.last_arrival = time.monotonic()
        status = "OK"
        try:
            return await self._admit(call, observer, t0)
        except BaseException as exc:
            status = status_of(exc).value
            raise
        finally:  # every call, by the door it came through (metrics)
            life.count_call(call.protocol, status)

    async def _admit(self, call: InferCall[R], observer: Observer | None, t0: int) -> R:
        life = self.state
        try:
            life.check_ready()
            served: ServedGraph = self.repository.get(call.graph, call.version)
        except EngineError as exc:  # counted without a graph label: names are unbounded
            life.count_unrouted(status_of(exc).value)
            raise
        route: Route | None = None
        decoded: list[np.ndarray] | None = None
        rollouts = self.rollouts  # a rollout's arm: only for calls that name no version
        if rollouts is not None and rollouts.active and not call.version:
            route, decoded = rollouts.route(served, call)
            if route is not None:
                served = route.served
        if isinstance(observer, EventCollector):
            observer.policy = served.policy
        admission = life.admission
        if call.request_id:  # log lines of this call (JSON log format) carry its id
            CURRENT_REQUEST_ID.set(call.request_id)
        try:
            await admission.acquire(call.time_remaining())
        except BaseException as exc:  # shed (or cancelled waiting) before any work: counted, recorded
            status = status_of(exc)
            took = time.perf_counter_ns() - t0
            if isinstance(exc, EngineError):
                served.stats.record_request(ok=False, code=status.value, total_ns=took)
            if self.recorder is not None and served.policy.enabled:
                error = str(exc) if isinstance(exc, EngineError) else type(exc).__name__
                self._record(self.recorder, served, call, status, error, (), (), None, None, took, None)
            raise
        try:
            if self.tracing is None:
                return await self._serve(served, call, t0, None, observer, route, decoded)
            with self.tracing.request_span(served, call) as (span, spans):
                try:
                    response = await self._serve(served, call, t0, spans, observer, route, decoded)
                except BaseException as exc:
                    span.set_attributes(call.status_attributes(status_of(exc)))
                    raise
                span.set_attributes(call.status_attributes(Status.OK))
                return response
        finally:
            admission.release()

    async def _serve(
        self,
        served: ServedGraph,
        call: InferCall[R],
        t0: int,
        spans: ObserverFactory | None,
        extra: Observer | None,
        route: Route | None = None,
        decoded: list[np.ndarray] | None = None,
    ) -> R:
        life = self.state
        life.in_flight += 1
        status = Status.OK
        error = ""
        t1 = t2 = t0
        rows = 0
        inputs: list[np.ndarray] = []
        outputs: tuple[np.ndarray | None, ...] = ()
        policy = served.policy
        recorder = self.recorder if policy.enabled else None
        log: EventLog | None = None
        mirrors = self.repository.mirrors_of(served.name) if self.dispatcher is not None else ()
        if route is not None and route.shadow is not None and self.dispatcher is not None:
            mirrors = (*mirrors, route.shadow)  # a rollout's shadow step: the candidate mirrors this call
        quality = served.quality
        has_shadows = bool(mirrors) or served.runner.has_shadows
        shadows = RequestShadows() if has_shadows and (recorder is not None or quality is not None) else None
        live = None
        flags: list[Violation] | None = None
        arms: dict[str, tuple[np.ndarray, tuple[str, ...]]] | None = (
            {} if quality is not None and served.splits_rows else None
        )
        try:
            plan = served.graph.plan
            inputs = decoded if decoded is not None else call.decode(plan.inputs, plan.outputs)
            if shadows is not None and quality is not None and call.request_id:  # candidates' quality
                rows = int(inputs[plan.batch_inputs[0]].shape[0]) if plan.batch_inputs else 1
                shadows.listener = functools.partial(quality.on_shadow, call.request_id, rows)
            if served.checks_contracts:  # the graph's data contracts, on the decoded inputs
                flags = []
                if plan.contracts:
                    enforce([(c, inputs[i]) for i, c in plan.contracts], served.stats, flags)
            remaining = call.time_remaining()
            deadline = None if remaining is None else time.monotonic() + remaining
            observer = spans() if spans is not None else None
            if extra is not None:
                observer = extra if observer is None else _Both(extra, observer)
            if recorder is not None:  # keeps the node events for the record, forwarding them
                observer = log = recorder.observer(observer)
            t1 = time.perf_counter_ns()
            if mirrors:  # graphs with `shadow_of: <this graph>` start now, on the same inputs
                assert self.dispatcher is not None
                live = self.dispatcher.launch(
                    mirrors, inputs, served.input_names, request_id=call.request_id, results=shadows
                )
            outputs = await served.runner.run(
                inputs,
                deadline=deadline,
                observer=observer,
                request_id=call.request_id,
                shadows=shadows,
                flags=flags,
                tap=served.drift.tap if served.drift is not None else None,
                arms=arms,
            )
            t2 = time.perf_counter_ns()
            if quality is not None and (prediction := outputs[quality.config.output_index]) is not None:
                quality.remember(call.request_id, prediction, arms)  # awaits its label (Feedback)
            if live is not None:
                named = {n: a for n, a in zip(served.output_names, outputs, strict=True) if a is not None}
                live.set_result(LiveResult(named, t2 - t1))
            result = InferResult(
                served.name,
                served.version,
                call.request_id,
                plan.outputs,
                outputs,
                served.output_index,
                t2 - t1,
                served.lineage,
            )
            response = call.encode(result)
            rows = _rows(outputs)
            return response
        except BaseException as exc:
            status = status_of(exc)
            error = str(exc) if isinstance(exc, EngineError) else type(exc).__name__
            raise
        finally:
            life.in_flight -= 1
            if live is not None and not live.done():  # the live graph failed: nothing to compare
                live.set_result(None)
            t3 = time.perf_counter_ns()
            served.stats.record_request(
                ok=status is Status.OK,
                code=status.value,
                total_ns=t3 - t0,
                decode_ns=t1 - t0,
                infer_ns=t2 - t1,
                encode_ns=t3 - t2,
                rows=rows,
            )
            if route is not None:  # the rollout's numbers of this arm, over the current step
                route.counts.record(status, t3 - t0)
            if recorder is not None:
                self._record(
                    recorder, served, call, status, error, inputs, outputs, log, shadows, t3 - t0, flags
                )

    def _record(
        self,
        recorder: RequestRecorder,
        served: ServedGraph,
        call: InferCall[Any],
        status: Status,
        error: str,
        inputs: Sequence[np.ndarray],
        outputs: Sequence[np.ndarray | None],
        log: EventLog | None,
        shadows: RequestShadows | None,
        took_ns: int,
        flags: Sequence[Violation] | None,
    ) -> None:
        """Hand the call's outcome to the request log if the graph's policy keeps it."""
        policy = served.policy
        reason = policy.should_log(status is Status.OK)
        if reason is None and shadows is not None and "shadow_disagreement" in policy.always_on:
            reason = "shadow_disagreement"  # logged only if a shadow disagrees (known later)
        if reason is None:
            return
        names = served.output_names
        recorder.record(
            RequestOutcome(
                request_id=call.request_id,
                trace_id=current_trace_id(),
                graph=served.name,
                version=served.version,
                protocol=call.protocol,
                models=served.models,
                inputs=dict(zip(served.input_names, inputs, strict=False)),
                outputs={n: a for n, a in zip(names, outputs, strict=False) if a is not None},
                events=log.events if log is not None else (),
                status=status.value,
                error=error,
                latency_us=took_ns // 1000,
                time_ns=time.time_ns() - took_ns,
                policy=policy,
                reason=reason,
                shadows=shadows,
                violations=tuple(v.describe() for v in flags) if flags else (),
                model_sources=served.sources,
            )
        )

    async def explain(self, call: InferCall[R], *, reveal: bool = False) -> tuple[R, list[NodeEvent]]:
        """Serve ``call`` like any other (counted, recorded) and also return every node's event.

        The graph's logging policy applies: a tensor it redacts or hashes (and every value
        derived from one) is withheld from the events, named in ``NodeEvent.redacted``, unless
        ``reveal`` (an admin's explicit ask)."""
        collector = EventCollector()
        response = await self.infer(call, collector)
        policy = collector.policy
        if reveal or policy is None or not (policy.redact or policy.hash):
            return response, collector.events
        return response, [_withheld(event, policy) for event in collector.events]


def _withheld(event: NodeEvent, policy: LoggingPolicy) -> NodeEvent:
    """``event`` without the tensors ``policy`` protects (by record path: ``inputs.x``, ``node.t``)."""
    hidden = policy.redact | policy.hash

    def protected(path: str) -> bool:
        return path in hidden or f"{path.split('.', 1)[0]}.*" in hidden

    inputs = {name: a for name, a in event.inputs.items() if not protected(name)}
    outputs = {name: a for name, a in event.outputs.items() if not protected(f"{event.node}.{name}")}
    if len(inputs) == len(event.inputs) and len(outputs) == len(event.outputs):
        return event
    withheld = tuple(n for n in event.inputs if n not in inputs) + tuple(
        f"{event.node}.{n}" for n in event.outputs if n not in outputs
    )
    return replace(event, inputs=inputs, outputs=outputs, redacted=withheld)


def _rows(outputs: Sequence[np.ndarray | None]) -> int:
    for array in outputs:
        if array is not None and array.ndim:
            return int(array.shape[0])
    return 1
