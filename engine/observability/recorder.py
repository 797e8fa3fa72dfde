"""The concrete ``RequestRecorder``: builds a record off the response path and queues it.

Built by the server bootstrap from the ``request_log`` setting and handed to the
protocol edge, which only knows the kernel's ``RequestRecorder`` protocol.
"""

from __future__ import annotations

import asyncio
import logging

import numpy as np

from engine.interfaces import Observer
from engine.observability.request_log import NodeEventLog, RequestLog
from engine.observability.request_record import build_record
from engine.shadow.outcome import RequestShadows

log = logging.getLogger("engine.request_log")


SHADOW_WAIT_S = 5.0
"""Default longest wait of a record for its request's shadows (``request_log.shadow_wait_s``)."""


class Recorder:
    def __init__(
        self, request_log: RequestLog, hash_key: bytes | None, shadow_wait_s: float = SHADOW_WAIT_S
    ) -> None:
        self.request_log = request_log
        self.hash_key = hash_key
        self.shadow_wait_s = shadow_wait_s
        self.build_errors = 0
        self._waiting: set[asyncio.Task[None]] = set()  # records waiting for their shadows

    def observer(self, forward: Observer | None) -> Observer:
        return NodeEventLog(forward)

    def record(
        self,
        *,
        policy: object,
        reason: str,
        request_id: str,
        trace_id: str,
        graph: str,
        version: str,
        models: dict[str, str],
        inputs: dict[str, np.ndarray],
        outputs: dict[str, np.ndarray],
        observer: Observer | None,
        status: str,
        error: str,
        latency_us: int,
        time_ns: int,
        shadows: object | None = None,
    ) -> None:
        """Queue the record's construction after the current callback: the response goes first.

        With shadows still running, the record is built when they settle (at most ``shadow_wait_s``;
        those still running then are written as ``unsettled``)."""
        events = observer.events if isinstance(observer, NodeEventLog) else ()
        fields = dict(
            request_id=request_id, trace_id=trace_id, graph=graph, version=version, models=models,
            inputs=inputs, outputs=outputs, events=events, status=status, error=error,
            latency_us=latency_us, policy=policy, sampled_because=reason, hash_key=self.hash_key,
            time_ns=time_ns,
        )  # fmt: skip
        if isinstance(shadows, RequestShadows) and (shadows.pending or reason == "shadow_disagreement"):
            task = asyncio.get_running_loop().create_task(self._after_shadows(fields, shadows))
            self._waiting.add(task)
            task.add_done_callback(self._waiting.discard)
            return
        if isinstance(shadows, RequestShadows):
            fields["shadows"] = dict(shadows.outcomes)
        asyncio.get_running_loop().call_soon(self._build_and_submit, fields)

    async def _after_shadows(self, fields: dict, shadows: RequestShadows) -> None:  # type: ignore[type-arg]
        try:
            fields["shadows"] = await shadows.settled(self.shadow_wait_s)
        except asyncio.CancelledError:
            fields["shadows"] = shadows.so_far()
        if fields["sampled_because"] == "shadow_disagreement" and not shadows.disagreed:
            return  # logged only because a shadow might disagree; none did
        self._build_and_submit(fields)

    async def flush(self, timeout_s: float) -> None:
        """Let records still waiting for their shadows be built (shutdown), within ``timeout_s``."""
        if self._waiting:
            await asyncio.wait(set(self._waiting), timeout=timeout_s)

    def _build_and_submit(self, fields: dict) -> None:  # type: ignore[type-arg]
        try:
            record = build_record(**fields)
        except Exception:  # a record we cannot build is counted, never raised into serving
            self.build_errors += 1
            self.request_log.failed += 1
            log.exception("could not build a request-log record for graph %s", fields.get("graph"))
            return
        self.request_log.submit(record)
