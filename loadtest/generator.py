"""A generator process: sends its share of the schedule open-loop and records what happened.

The parent (:mod:`loadtest.runner`) starts one process per ``load.processes``
with :func:`worker_main`, hands each a round-robin share of the arrivals, and
sends all of them the same start instant (``time.monotonic_ns``, which is the
system-wide ``CLOCK_MONOTONIC`` on Linux and macOS, so processes agree on it).

For each arrival the process waits until its intended time and fires the call
without waiting for earlier answers. Three instants are kept per request:
*intended* (from the schedule), *sent* (when the call really started) and
*done*. Latency is ``done - intended``, so a stalled server — or a generator
that fell behind — shows up in the latency instead of quietly lowering the
load; ``sent - intended`` is the generator's own lag, reported separately so a
saturated generator is visible rather than mistaken for a slow server.

Windows are ``window_ns`` slices of the run counted from the end of warm-up
(negative indices are warm-up). Latency and outcomes go to the window of the
request's *intended* time; the sent and completed counters go to the window in
which they happened, which is what the achieved-rate plot needs.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, TypedDict

import grpc
import numpy as np
from hdrh.histogram import HdrHistogram

from loadtest import histograms

METHOD = "/inference.GRPCInferenceService/ModelInfer"
CLIENT_ERROR = "CLIENT_ERROR"  # the call failed inside the client library, not with a status
# the pre-encoded ModelInferRequest in, the undecoded response out
InferCall = grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]


class WindowExport(TypedDict):
    """One window as sent to the parent: histograms in their compressed encoding."""

    ok: bytes
    all: bytes
    outcomes: dict[str, int]
    sent: int
    completed_ok: int
    completed_error: int
    lag_max_us: int


class RecorderExport(TypedDict):
    """Everything a process measured, sent once with ``("done", index, export)``."""

    windows: dict[int, WindowExport]
    lag: bytes
    from_send: bytes
    late: int


class ProgressSnapshot(TypedDict):
    """What a process saw since its previous ``("progress", index, snapshot)`` message."""

    seconds: float
    sent: int
    ok: int
    errors: int
    in_flight: int
    lag_max_us: int
    latency: bytes


@dataclass(frozen=True)
class WorkerPlan:
    index: int
    url: str
    payloads: list[bytes]
    arrivals: np.ndarray  # global arrival numbers (payload = payloads[n % len])
    offsets_ns: np.ndarray  # intended send offsets from the start, sorted
    warmup_ns: int
    window_ns: int
    timeout_s: float
    max_in_flight: int
    progress_every_s: float = 1.0


@dataclass
class Window:
    ok: HdrHistogram = field(default_factory=histograms.new)  # latency of OK requests intended here
    all: HdrHistogram = field(default_factory=histograms.new)  # latency of every request intended here
    outcomes: Counter[str] = field(default_factory=Counter)  # status name → count, by intended time
    sent: int = 0  # calls started in this window
    completed_ok: int = 0  # OK answers that arrived in this window
    completed_error: int = 0
    lag_max_us: int = 0  # worst send lag of requests intended here

    def export(self) -> WindowExport:
        return {
            "ok": histograms.encode(self.ok),
            "all": histograms.encode(self.all),
            "outcomes": dict(self.outcomes),
            "sent": self.sent,
            "completed_ok": self.completed_ok,
            "completed_error": self.completed_error,
            "lag_max_us": self.lag_max_us,
        }


class Recorder:
    def __init__(self, warmup_ns: int, window_ns: int) -> None:
        self.warmup_ns = warmup_ns
        self.window_ns = window_ns
        self.windows: dict[int, Window] = {}
        self.lag = histograms.new()  # send lag of measured requests
        self.from_send = histograms.new()  # done - sent of measured OK requests (the closed-loop view)
        self.late = 0  # measured requests sent more than 1 ms late
        # since the last progress report
        self.interval = histograms.new()
        self.interval_sent = 0
        self.interval_ok = 0
        self.interval_errors = 0
        self.interval_lag_max_us = 0
        self.interval_since = time.monotonic()

    def window(self, offset_ns: int) -> Window:
        k = (offset_ns - self.warmup_ns) // self.window_ns
        w = self.windows.get(k)
        if w is None:
            w = self.windows[k] = Window()
        return w

    def sent(self, intended: int, sent: int) -> None:
        self.window(sent).sent += 1
        self.interval_sent += 1
        lag_us = max(0, (sent - intended) // 1000)
        w = self.window(intended)
        w.lag_max_us = max(w.lag_max_us, lag_us)
        self.interval_lag_max_us = max(self.interval_lag_max_us, lag_us)
        if intended >= self.warmup_ns:
            histograms.record(self.lag, lag_us)
            if lag_us > 1000:
                self.late += 1

    def done(self, intended: int, sent: int, done: int, code: str) -> None:
        latency_us = max(1, (done - intended) // 1000)
        w = self.window(intended)
        w.outcomes[code] += 1
        histograms.record(w.all, latency_us)
        finished = self.window(done)
        if code == "OK":
            histograms.record(w.ok, latency_us)
            if intended >= self.warmup_ns:
                histograms.record(self.from_send, max(1, (done - sent) // 1000))
            histograms.record(self.interval, latency_us)
            finished.completed_ok += 1
            self.interval_ok += 1
        else:
            finished.completed_error += 1
            self.interval_errors += 1

    def progress(self, in_flight: int) -> ProgressSnapshot:
        now = time.monotonic()
        snapshot: ProgressSnapshot = {
            "seconds": now - self.interval_since,
            "sent": self.interval_sent,
            "ok": self.interval_ok,
            "errors": self.interval_errors,
            "in_flight": in_flight,
            "lag_max_us": self.interval_lag_max_us,
            "latency": histograms.encode(self.interval),
        }
        self.interval_since = now
        self.interval = histograms.new()
        self.interval_sent = self.interval_ok = self.interval_errors = self.interval_lag_max_us = 0
        return snapshot

    def export(self) -> RecorderExport:
        return {
            "windows": {k: w.export() for k, w in self.windows.items()},
            "lag": histograms.encode(self.lag),
            "from_send": histograms.encode(self.from_send),
            "late": self.late,
        }


def worker_main(plan: WorkerPlan, conn: Connection) -> None:
    """Process entry point: connect, report ready, wait for the start instant, run, send results."""
    runner: Callable[[Coroutine[Any, Any, None]], None]
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        runner = asyncio.run
    try:
        runner(_run(plan, conn))
    except Exception as exc:  # report instead of dying silently
        conn.send(("error", plan.index, f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


async def _run(plan: WorkerPlan, conn: Connection) -> None:
    loop = asyncio.get_running_loop()
    options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
    async with grpc.aio.insecure_channel(plan.url, options=options) as channel:
        await asyncio.wait_for(channel.channel_ready(), timeout=10)
        call: InferCall = channel.unary_unary(METHOD)  # bytes in, bytes out: nothing parsed on the hot path
        conn.send(("ready", plan.index, None))
        start_ns = await loop.run_in_executor(None, conn.recv)
        recorder = Recorder(plan.warmup_ns, plan.window_ns)
        await _drive(plan, call, start_ns, recorder, conn)
        conn.send(("done", plan.index, recorder.export()))


async def _drive(
    plan: WorkerPlan, call: InferCall, start_ns: int, recorder: Recorder, conn: Connection
) -> None:
    payloads, n_payloads, timeout = plan.payloads, len(plan.payloads), plan.timeout_s
    offsets: list[int] = plan.offsets_ns.tolist()
    arrivals: list[int] = plan.arrivals.tolist()
    in_flight = 0
    slot_free = asyncio.Event()
    tasks: set[asyncio.Task[None]] = set()

    async def one(arrival: int, intended: int) -> None:
        nonlocal in_flight
        sent = time.monotonic_ns() - start_ns
        recorder.sent(intended, sent)
        try:
            await call(payloads[arrival % n_payloads], timeout=timeout)
            code = "OK"
        except grpc.aio.AioRpcError as exc:
            code = exc.code().name
        except Exception:
            code = CLIENT_ERROR
        recorder.done(intended, sent, time.monotonic_ns() - start_ns, code)
        in_flight -= 1
        slot_free.set()

    async def report() -> None:
        while True:
            await asyncio.sleep(plan.progress_every_s)
            conn.send(("progress", plan.index, recorder.progress(in_flight)))

    reporter = asyncio.create_task(report())
    i, n = 0, len(offsets)
    while i < n:
        now = time.monotonic_ns() - start_ns
        due = offsets[i]
        if due > now:
            await asyncio.sleep((due - now) / 1e9)
            continue
        while i < n and offsets[i] <= now:  # everything due now: fire without waiting for answers
            while in_flight >= plan.max_in_flight:  # bounded memory; the wait shows up as lag
                slot_free.clear()
                await slot_free.wait()
            in_flight += 1
            task = asyncio.create_task(one(arrivals[i], offsets[i]))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            i += 1
        await asyncio.sleep(0)
    while tasks:
        await asyncio.gather(*list(tasks))
    reporter.cancel()
    conn.send(("progress", plan.index, recorder.progress(0)))
