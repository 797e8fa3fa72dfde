"""``ShadowPool``: runs shadow work off the response path, bounded, sampled, and never in the way.

``submit`` decides sampling, then admits the work or sheds it, in O(1) and without
raising or blocking: at most ``concurrency`` shadows run at once (as tasks the
pool tracks), up to ``queue_size`` more wait, anything beyond is shed and counted.
While ``pressure(True)`` is on (live admission is overloaded) every submission is
shed, queued ones too: shadows go first. Each run is bounded by its shadow's
``timeout_s``; its outputs are compared with the live target's once those are
known (``live`` may be a future the executor resolves later). Errors, timeouts
and comparison failures are counted in the shadow's ``ShadowComparison`` and
logged at debug level, never raised. ``drain(grace_s)`` lets running shadows
finish within the grace period, then cancels and counts the rest.

The work unit is the executor's: an async callable that runs the candidate on the
live inputs and returns a ``ShadowRun``. It must not hold the event loop; a
candidate in a thread pool keeps its thread after a timeout (its result is dropped).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from engine.shadow.compare import CANCELLED, ERROR, NO_LIVE, OK, SHED, SKIPPED, TIMEOUT, ShadowComparison
from engine.shadow.outcome import RequestShadows, ShadowOutcome

log = logging.getLogger("engine.shadow")

BREAK_AFTER = 20
"""Errors or timeouts in a row after which a shadow is only probed (see ``ShadowPool._backing_off``)."""
PROBE_SHARE = 0.02
"""Share of a backed-off shadow's sampled requests still run, to notice it recovered."""


@dataclass(frozen=True, slots=True)
class ShadowRun:
    """What a shadow's work returns: its outputs and how long the candidate took (ns)."""

    outputs: Mapping[str, np.ndarray]
    duration_ns: int


@dataclass(frozen=True, slots=True)
class LiveResult:
    """The live target's outputs and duration (ns), as the shadow is compared against them."""

    outputs: Mapping[str, np.ndarray]
    duration_ns: int


ShadowWork = Callable[[], Awaitable[ShadowRun]]
LiveSource = LiveResult | Awaitable[LiveResult | None]
"""The live side: known already, or a future resolved with ``None`` (or cancelled) when the target fails."""


@dataclass(frozen=True, slots=True)
class ShadowRunEvent:
    """One shadow run that ran (or was cut off), for a tracer: ``link`` is what the hook's
    ``capture`` returned when the live request submitted it (its span context)."""

    graph: str
    shadow: str
    target: str
    status: str  # ok | error | timeout | cancelled | no_live
    start_ns: int  # wall clock (time.time_ns)
    end_ns: int
    link: object
    error: str = ""


class ShadowRunHook(Protocol):
    """What the pool tells a tracer (the bootstrap's ``engine.observability.tracing.ShadowSpans``)."""

    def capture(self) -> object:
        """Called in the live request's context at submission: what to link the run's span to."""
        ...

    def record(self, event: ShadowRunEvent) -> None:
        """Called once a run has finished; must not raise (it is guarded anyway)."""
        ...


@dataclass(slots=True)
class _Job:
    comparison: ShadowComparison
    work: ShadowWork
    live: LiveSource
    results: RequestShadows | None
    link: object = None
    status: str = ""
    error: str = ""


SHED_REASONS = ("queue_full", "live_pressure", "back_off", "draining")


class ShadowPool:
    """Shadow work for every graph of one process, under one concurrency limit and queue.

    ``sampling``: ``"random"`` (a ``random.Random(seed)`` draw per submission) or
    ``"request_id"`` (a hash of the request id, so a request is sampled the same way every
    time and a shadow at 0.1 sees a subset of one at 0.5; requests without an id draw).
    ``live_wait_s`` bounds the wait for the live side after a shadow has finished.
    """

    def __init__(
        self,
        concurrency: int = 4,
        queue_size: int = 256,
        *,
        sampling: str = "random",
        seed: int | None = None,
        live_wait_s: float = 30.0,
        hook: ShadowRunHook | None = None,
    ) -> None:
        if sampling not in ("random", "request_id"):
            raise ValueError(f"sampling must be 'random' or 'request_id', not {sampling!r}")
        self.concurrency = concurrency
        self.queue_size = queue_size
        self.live_wait_s = live_wait_s
        self._by_id = sampling == "request_id"
        self._random = random.Random(seed)
        self._running: set[asyncio.Task[None]] = set()
        self._waiting: deque[_Job] = deque()
        self._pressure = False
        self._closed = False
        self.internal_errors = 0
        self.hook = hook  # a span per run, linked to the live request (tracing on), else None
        # why runs were shed: queue_full, live_pressure (live calls queueing), back_off (a candidate
        # failing in a row runs on a probe share only), draining (shutting down)
        self.shed_reasons: dict[str, int] = dict.fromkeys(SHED_REASONS, 0)

    @property
    def in_flight(self) -> int:
        return len(self._running)

    @property
    def queued(self) -> int:
        return len(self._waiting)

    def sampled(self, sample: float, request_id: str = "") -> bool:
        """Whether a request is sampled at fraction ``sample``."""
        if sample >= 1.0:
            return True
        if sample <= 0.0:
            return False
        if self._by_id and request_id:
            digest = hashlib.blake2b(request_id.encode(), digest_size=8).digest()
            return int.from_bytes(digest, "big") / 2.0**64 < sample
        return self._random.random() < sample

    def submit(
        self,
        comparison: ShadowComparison,
        work: ShadowWork,
        *,
        live: LiveSource,
        request_id: str = "",
        results: RequestShadows | None = None,
    ) -> bool:
        """Run ``work`` for one request if it is sampled and there is room; never blocks or raises."""
        try:
            if not self.sampled(comparison.config.sample, request_id):
                self._refuse(comparison, SKIPPED, results)
                return False
            reason = self._shed_reason(comparison)
            if reason is not None:
                self.shed_reasons[reason] += 1
                self._refuse(comparison, SHED, results)
                return False
            if results is not None:
                results.expect(comparison.config.shadow, comparison.config.target)
            job = _Job(comparison, work, live, results)
            if self.hook is not None:
                job.link = self.hook.capture()
            if len(self._running) < self.concurrency:
                self._start(job)
            else:
                self._waiting.append(job)
            return True
        except Exception:  # a bug here must not reach the live request
            self.internal_errors += 1
            log.exception("shadow submission failed")
            return False

    def pressure(self, on: bool) -> None:
        """Live admission is (``True``) or is no longer overloaded: shed shadows first, queued ones too."""
        self._pressure = on
        while on and self._waiting:
            self.shed_reasons["live_pressure"] += 1
            self._finish(self._waiting.popleft(), SHED)

    async def drain(self, grace_s: float) -> None:
        """Stop accepting; cancel queued work; let running work finish within ``grace_s``, cancel the rest."""
        self._closed = True
        while self._waiting:
            self._finish(self._waiting.popleft(), CANCELLED)
        if not self._running:
            return
        _, late = await asyncio.wait(set(self._running), timeout=grace_s)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late, timeout=1.0)  # work that swallows cancellation is abandoned

    def _shed_reason(self, comparison: ShadowComparison) -> str | None:
        if self._closed:
            return "draining"
        if self._pressure:
            return "live_pressure"
        if self._full():
            return "queue_full"
        if self._backing_off(comparison):
            return "back_off"
        return None

    def _backing_off(self, comparison: ShadowComparison) -> bool:
        """A candidate that failed ``BREAK_AFTER`` times in a row runs on one sampled request in
        ``1 / PROBE_SHARE`` until it succeeds again: a broken candidate costs the live path nothing."""
        return comparison.failing >= BREAK_AFTER and self._random.random() >= PROBE_SHARE

    def _full(self) -> bool:
        return len(self._running) >= self.concurrency and len(self._waiting) >= self.queue_size

    def _refuse(self, comparison: ShadowComparison, status: str, results: RequestShadows | None) -> None:
        comparison.count(status)
        if results is not None:
            config = comparison.config
            results.settle(ShadowOutcome(config.shadow, config.target, status), was_pending=False)

    def _start(self, job: _Job) -> None:
        task = asyncio.get_running_loop().create_task(self._work_through(job))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _work_through(self, job: _Job | None) -> None:
        while job is not None:
            await self._run(job)
            job = self._waiting.popleft() if self._waiting and not self._closed else None

    async def _run(self, job: _Job) -> None:
        if self.hook is None:
            return await self._run_one(job)
        wall = time.time_ns()
        try:
            await self._run_one(job)
        finally:
            self._record(job, wall)

    def _record(self, job: _Job, start_ns: int) -> None:
        assert self.hook is not None
        config = job.comparison.config
        try:
            event = ShadowRunEvent(
                config.graph, config.shadow, config.target, job.status or CANCELLED, start_ns, time.time_ns(),
                job.link, job.error,
            )  # fmt: skip
            self.hook.record(event)
        except Exception:  # tracing must never reach the shadow's numbers or the live path
            self.internal_errors += 1
            log.exception("shadow %s: could not record its span", config.shadow)

    async def _run_one(self, job: _Job) -> None:
        timeout_s = job.comparison.config.timeout_s
        started = time.perf_counter_ns()
        try:
            try:
                async with asyncio.timeout(timeout_s):
                    run = await job.work()
            except TimeoutError:
                self._finish(job, TIMEOUT, duration_ns=time.perf_counter_ns() - started)
                return
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                self._finish(job, ERROR, error, duration_ns=time.perf_counter_ns() - started)
                return
            live = await self._live(job.live)
            if live is None:
                self._finish(job, NO_LIVE, duration_ns=run.duration_ns)
                return
            self._compare(job, run, live)
        except asyncio.CancelledError:
            self._finish(job, CANCELLED, duration_ns=time.perf_counter_ns() - started)
            raise

    async def _live(self, live: LiveSource) -> LiveResult | None:
        if isinstance(live, LiveResult):
            return live
        try:  # shielded: cancelling or timing out this wait must not cancel the executor's future
            return await asyncio.wait_for(asyncio.shield(live), self.live_wait_s)
        except (Exception, asyncio.CancelledError) as exc:
            if isinstance(exc, asyncio.CancelledError) and _cancelling():
                raise
            return None

    def _compare(self, job: _Job, run: ShadowRun, live: LiveResult) -> None:
        comparison = job.comparison
        try:
            verdicts = comparison.observe(live.outputs, run.outputs, live.duration_ns, run.duration_ns)
        except Exception as exc:  # a comparison bug is counted as the shadow's error
            self.internal_errors += 1
            log.exception("shadow %s: comparison failed", comparison.config.shadow)
            self._finish(job, ERROR, f"comparison failed: {exc}", duration_ns=run.duration_ns)
            return
        job.status = OK
        if job.results is not None:
            config = comparison.config
            names = config.rules.keys() if config.rules else run.outputs.keys() & live.outputs.keys()
            outcome = ShadowOutcome(
                config.shadow, config.target, OK, duration_ns=run.duration_ns, live_ns=live.duration_ns,
                outputs=dict(run.outputs), live={n: live.outputs[n] for n in names if n in live.outputs},
                rules=config.rules, verdicts=verdicts,
            )  # fmt: skip
            self._settle(job.results, outcome)

    def _finish(self, job: _Job, status: str, error: str = "", duration_ns: int = 0) -> None:
        job.status, job.error = status, error
        job.comparison.count(status, error)
        if status == ERROR:
            log.debug("shadow %s failed: %s", job.comparison.config.shadow, error)
        if job.results is not None:
            config = job.comparison.config
            self._settle(job.results, ShadowOutcome(config.shadow, config.target, status, error, duration_ns))

    def _settle(self, results: RequestShadows, outcome: ShadowOutcome) -> None:
        try:
            results.settle(outcome)
        except Exception:
            self.internal_errors += 1
            log.exception("shadow %s: could not hand over the result", outcome.shadow)


def _cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
