"""The concrete ``RequestRecorder``: builds a record off the response path and queues it.

Built by the server bootstrap from the ``request_log`` setting and handed to the
protocol edge, which only knows the kernel's ``RequestRecorder`` protocol.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any

from engine.interfaces import Observer, RequestOutcome
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
        self._waiting: set[asyncio.Task[None]] = set()  # records waiting for their shadows

    def observer(self, forward: Observer | None) -> NodeEventLog:
        return NodeEventLog(forward)

    def record(self, outcome: RequestOutcome) -> None:
        """Queue the record's construction after the current callback: the response goes first.

        With shadows still running, the record is built when they settle (at most ``shadow_wait_s``;
        those still running then are written as ``unsettled``)."""
        fields: dict[str, Any] = dict(
            request_id=outcome.request_id, trace_id=outcome.trace_id, graph=outcome.graph,
            version=outcome.version, models=outcome.models, inputs=outcome.inputs, outputs=outcome.outputs,
            events=outcome.events, status=outcome.status, error=outcome.error,
            latency_us=outcome.latency_us, policy=outcome.policy, sampled_because=outcome.reason,
            hash_key=self.hash_key, time_ns=outcome.time_ns, violations=outcome.violations,
            protocol=outcome.protocol, model_sources=outcome.model_sources,
        )  # fmt: skip
        shadows = outcome.shadows
        waits = outcome.reason == "shadow_disagreement"
        if isinstance(shadows, RequestShadows) and (shadows.pending or waits):
            task = asyncio.get_running_loop().create_task(self._after_shadows(fields, shadows))
            self._waiting.add(task)
            task.add_done_callback(self._waiting.discard)
            return
        if isinstance(shadows, RequestShadows):
            fields["shadows"] = dict(shadows.outcomes)
        asyncio.get_running_loop().call_soon(self._build_and_submit, fields)

    async def _after_shadows(self, fields: dict[str, Any], shadows: RequestShadows) -> None:
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

    def _build_and_submit(self, fields: dict[str, Any]) -> None:
        """Queue the record; it is built on the sink thread (arrays to JSON-ready lists are not
        event-loop work: a 50 MB tensor once stalled the loop for half a second)."""
        self.request_log.submit(functools.partial(build_record, **fields))
