"""Admission control: a concurrency limit, a bounded wait queue, and a maximum wait.

Only inference calls are admitted through here; health, metadata and admin calls
never queue and are never shed. A call that finds every slot taken waits in FIFO
order while the queue has room and for at most ``max_wait_s`` (or what is left of
its deadline); otherwise it is rejected at once with ``Overloaded``
(RESOURCE_EXHAUSTED and a ``grpc-retry-pushback-ms`` trailer), so an overloaded
server stays fast for the calls it accepts instead of letting every call slow down.

The fast path (a free slot) is one comparison and one increment, no await.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from engine.errors import Overloaded

PRESSURE_LAG_S = 0.01
"""Event-loop lag beyond which live calls count as queueing (shadow work is then shed)."""


@dataclass
class Admission:
    limit: int = 0  # concurrent calls executing; 0 = no limit
    max_queue: int = 0  # calls allowed to wait for a slot
    max_wait_s: float = 0.1
    active: int = 0
    rejected: dict[str, int] = field(
        default_factory=lambda: {"queue_full": 0, "queue_wait": 0, "loop_lag": 0}
    )
    loop_lag_s: float = 0.0  # how late the event loop last ran a timer (LoopLagMonitor keeps it current)
    _waiters: deque[asyncio.Future[None]] = field(default_factory=deque)

    @property
    def queued(self) -> int:
        return len(self._waiters)

    def under_pressure(self) -> bool:
        """Live calls wait (for a slot, or for the event loop): secondary work should make room."""
        return (
            bool(self._waiters)
            or (self.limit > 0 and self.active >= self.limit)
            or self.loop_lag_s > PRESSURE_LAG_S
        )

    async def acquire(self, remaining_s: float | None = None) -> None:
        """Take a slot, waiting in line if allowed; raise ``Overloaded`` when shed."""
        if self.limit > 0 and self.loop_lag_s > self.max_wait_s:
            # Calls are already queueing in gRPC and the event loop, where no counter sees them:
            # refuse new work until the loop catches up instead of making everyone late.
            self.rejected["loop_lag"] += 1
            raise Overloaded(
                f"server at capacity: event loop {self.loop_lag_s * 1000:.0f} ms behind",
                retry_after_ms=self._pushback_ms(),
            )
        if self.limit <= 0 or (self.active < self.limit and not self._waiters):
            self.active += 1
            return
        if len(self._waiters) >= self.max_queue:
            self.rejected["queue_full"] += 1
            raise Overloaded(
                f"server at capacity: {self.active} calls running, {len(self._waiters)} waiting",
                retry_after_ms=self._pushback_ms(),
            )
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        wait = self.max_wait_s if remaining_s is None else max(0.0, min(self.max_wait_s, remaining_s))
        try:
            async with asyncio.timeout(wait):
                await waiter  # release() hands its slot over: active is unchanged
        except TimeoutError:
            if self._granted(waiter):
                return  # the slot arrived just as the wait ended: keep it
            self.rejected["queue_wait"] += 1
            raise Overloaded(
                f"server at capacity: waited {wait * 1000:.0f} ms for a slot",
                retry_after_ms=self._pushback_ms(),
            ) from None
        except BaseException:  # the caller went away (cancelled): a slot handed over moves on
            if self._granted(waiter):
                self.release()
            raise

    def _granted(self, waiter: asyncio.Future[None]) -> bool:
        """Whether ``waiter`` was handed a slot; withdraws it from the line otherwise."""
        if waiter.done() and not waiter.cancelled():
            return True
        waiter.cancel()
        if waiter in self._waiters:
            self._waiters.remove(waiter)
        return False

    def release(self) -> None:
        """Free a slot, or hand it straight to the longest-waiting call."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.active -= 1

    def _pushback_ms(self) -> int:
        """How long a client should back off: the queue wait, at least 10 ms."""
        return max(10, int(self.max_wait_s * 1000))


class LoopLagMonitor:
    """Measures how late the event loop runs a timer (the queueing no counter sees).

    Calls that never yield inside the handler (graphs whose models all run inline) queue in
    gRPC and the event loop before any of our code runs; a timer that wakes late is how that
    queue shows. The lag is decayed quickly so a burst does not shed for longer than it lasts.
    """

    def __init__(
        self,
        admission: Admission,
        interval_s: float = 0.005,
        on_pressure: Callable[[bool], None] | None = None,
    ) -> None:
        self.admission = admission
        self.interval_s = interval_s
        self.on_pressure = on_pressure  # told when live calls start or stop queueing (shadows shed first)
        self._pressure = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="loop-lag-monitor")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(self.interval_s)
            late = max(0.0, loop.time() - start - self.interval_s)
            self.admission.loop_lag_s = max(late, self.admission.loop_lag_s * 0.5)
            pressure = self.admission.under_pressure()
            if pressure != self._pressure and self.on_pressure is not None:
                self._pressure = pressure
                self.on_pressure(pressure)

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
