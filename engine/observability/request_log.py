"""The request-log pipeline: a bounded queue in front of a sink, never in the request's way.

``RequestLog.submit`` appends a finished record to an in-memory queue in O(1)
and returns at once; a full queue (or a log that is not running) drops the
record and counts it. A background task takes batches of up to
``batch_size`` records (waiting at most ``flush_interval_s`` for a batch to
fill) and hands each batch to the sink on the log's own daemon thread, so a
sink that blocks on disk or network, stalls or raises never blocks the event
loop, ``submit``, or the process's exit.

Before the sink sees a record it is held to ``max_record_bytes`` (``record_cap``: its largest
tensors summarised until its JSON line fits), on the same thread.

Accounting: every submitted record ends in exactly one counter —
``written`` (the sink accepted it), ``failed`` (the sink raised for it) or
``dropped`` (queue full, not running, or still unwritten when ``close``'s
timeout ran out) — or is still ``pending``. ``truncated`` counts, besides, the records
that were cut to fit ``max_record_bytes``.

Sinks (``RequestLogSink``) are plain synchronous objects; the real ones are in
``engine.observability.log_sinks``; ``MemorySink`` here is the test double.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from engine.interfaces import NodeEvent, Observer
from engine.observability.record_cap import cap_record
from engine.observability.request_record import SCHEMA, build_record, hash_key_from_env

__all__ = [
    "SCHEMA",
    "MemorySink",
    "NodeEventLog",
    "RequestLog",
    "RequestLogSink",
    "SinkWriteError",
    "build_record",
    "hash_key_from_env",
]

log = logging.getLogger("engine.request_log")
T = TypeVar("T")
Record = dict[str, Any]
Deferred = Callable[[], Record]
"""A record still to be built: built on the sink thread, never on the event loop (``submit``)."""
MAX_RECORD_BYTES = 1024 * 1024
"""Default largest record, as a JSON line (``request_log.max_record_bytes``; 0 = no cap)."""
MIN_RECORD_BYTES = 1024
"""Smallest cap accepted: a record's fixed fields alone take a few hundred bytes."""


class SinkWriteError(Exception):
    """A sink wrote part of a batch: ``failed`` of its records were not written."""

    def __init__(self, message: str, failed: int) -> None:
        super().__init__(message)
        self.failed = failed


class RequestLogSink(Protocol):
    """Writes batches of records; may block and may raise (the pipeline runs it on its own thread).

    ``write`` raising any exception fails the whole batch, except ``SinkWriteError``
    which names how many of the batch failed.
    """

    def write(self, records: Sequence[Record]) -> None: ...

    def close(self) -> None: ...


class MemorySink:
    """The in-memory sink: keeps every record (tests, examples)."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.closed = False

    def write(self, records: Sequence[Record]) -> None:
        self.records.extend(records)

    def close(self) -> None:
        self.closed = True


class NodeEventLog:
    """An ``Observer`` that keeps a request's ``NodeEvent``s (and forwards them, e.g. to tracing)."""

    def __init__(self, forward: Observer | None = None) -> None:
        self.events: list[NodeEvent] = []
        self._forward = forward

    def on_node(self, event: NodeEvent) -> None:
        self.events.append(event)
        if self._forward is not None:
            self._forward.on_node(event)


class _SinkThread:
    """One daemon thread running sink calls in order; a stalled call never blocks interpreter exit."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="request-log-sink", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            job()

    def call(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()

        def settle(result: Any, exc: BaseException | None) -> None:
            if future.done():
                return
            if exc is not None:
                future.set_exception(exc)
            else:
                future.set_result(result)

        def job() -> None:
            try:
                result, exc = fn(*args), None
            except BaseException as e:  # handed to the awaiting task, which counts it
                result, exc = None, e
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is waiting
                loop.call_soon_threadsafe(settle, result, exc)

        self._jobs.put(job)
        return future

    def stop(self) -> None:
        self._jobs.put(None)


class RequestLog:
    """A bounded, batching, non-blocking queue of records in front of one sink."""

    def __init__(
        self,
        sink: RequestLogSink,
        *,
        queue_size: int = 10_000,
        batch_size: int = 32,
        flush_interval_s: float = 0.2,
        max_record_bytes: int = MAX_RECORD_BYTES,
    ) -> None:
        if queue_size < 1 or batch_size < 1 or flush_interval_s < 0:
            raise ValueError("request log: queue_size and batch_size must be >= 1, flush_interval_s >= 0")
        if max_record_bytes and max_record_bytes < MIN_RECORD_BYTES:
            raise ValueError(
                f"request_log: 'max_record_bytes' must be 0 (no cap) or at least {MIN_RECORD_BYTES}, "
                f"got {max_record_bytes}"
            )
        self.sink = sink
        self.queue_size = queue_size
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.max_record_bytes = max_record_bytes
        self.written = 0
        self.dropped = 0
        self.failed = 0
        self.truncated = 0  # counted on the sink thread, its only writer
        self.last_error = ""
        self._pending: deque[Record | Deferred] = deque()
        self._inflight: Sequence[Record | Deferred] = ()
        self._running = False
        self._closing = False
        self._nonempty = asyncio.Event()
        self._full = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._thread: _SinkThread | None = None

    @property
    def pending(self) -> int:
        """Records queued or being written right now."""
        return len(self._pending) + len(self._inflight)

    def counters(self) -> dict[str, int]:
        """``written``, ``dropped``, ``failed``, ``pending``, and ``truncated`` (records cut to fit
        ``max_record_bytes``, also in one of the others) for metrics and health details."""
        return {
            "written": self.written,
            "dropped": self.dropped,
            "failed": self.failed,
            "pending": self.pending,
            "truncated": self.truncated,
        }

    def submit(self, record: Record | Deferred) -> bool:
        """Queue ``record``; False (and counted as dropped) when the queue is full or the log not running.

        ``record`` may be a function that builds it: it is then called on the sink thread, with
        the batch, so building (arrays to JSON-ready lists) never runs on the event loop; one that
        raises is counted as failed. Call it from the event loop's thread. Never blocks, never raises.
        """
        pending = self._pending
        if not self._running or len(pending) >= self.queue_size:
            self.dropped += 1
            return False
        pending.append(record)
        n = len(pending)
        if n == 1:
            self._nonempty.set()
        if n >= self.batch_size:
            self._full.set()
        return True

    async def start(self) -> None:
        """Start the background writer (on the running loop)."""
        if self._task is not None:
            return
        self._thread = _SinkThread()
        self._running = True
        self._task = asyncio.get_running_loop().create_task(self._writer(), name="request-log-writer")

    async def close(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109  (a budget, not a wait)
        """Stop accepting, write what is queued within ``timeout`` s, then close the sink.

        Records that could not be written in time are counted as dropped.
        """
        self._running = False
        task, self._task = self._task, None
        if task is None:
            return
        self._closing = True
        self._nonempty.set()
        self._full.set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        done, _ = await asyncio.wait({task}, timeout=timeout)
        if not done:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        lost = len(self._pending) + len(self._inflight)
        if lost:
            log.warning(
                "request log: %d records not written before the close timeout; counted as dropped", lost
            )
        self.dropped += lost
        self._pending.clear()
        self._inflight = ()
        assert self._thread is not None
        closing = self._thread.call(self.sink.close)
        try:
            await asyncio.wait_for(closing, max(0.05, deadline - loop.time()))
        except Exception as exc:  # a sink that cannot close cleanly must not fail shutdown
            log.warning("request log: closing the sink failed: %r", exc)
        self._thread.stop()

    def _build_and_write(self, batch: Sequence[Record | Deferred]) -> None:
        """On the sink thread: build the deferred records of ``batch``, hold each to
        ``max_record_bytes``, then write them all."""
        records: list[Record] = []
        unbuilt = 0
        for item in batch:
            try:
                record, cut = cap_record(item() if callable(item) else item, self.max_record_bytes)
            except Exception:  # a record we cannot build is counted, never raised into serving
                unbuilt += 1
                log.exception("request log: could not build a record")
                continue
            if cut:
                self.truncated += 1
            records.append(record)
        try:
            if records:
                self.sink.write(records)
        except SinkWriteError as exc:
            raise SinkWriteError(str(exc), exc.failed + unbuilt) from exc
        if unbuilt:
            raise SinkWriteError(f"{unbuilt} records could not be built", unbuilt)

    async def _writer(self) -> None:
        assert self._thread is not None
        while True:
            if not self._pending:
                if self._closing:
                    return
                self._nonempty.clear()
                await self._nonempty.wait()
                continue
            if len(self._pending) < self.batch_size and not self._closing:
                self._full.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full.wait(), self.flush_interval_s)
            take = min(self.batch_size, len(self._pending))
            batch = [self._pending.popleft() for _ in range(take)]
            self._inflight = batch
            try:
                await self._thread.call(self._build_and_write, batch)
            except asyncio.CancelledError:
                raise  # close() counts the in-flight batch
            except Exception as exc:
                bad = min(exc.failed, take) if isinstance(exc, SinkWriteError) else take
                self.failed += bad
                self.written += take - bad
                if str(exc) != self.last_error:
                    log.warning("request log: sink failed for %d records: %s", bad, exc)
                self.last_error = str(exc) or type(exc).__name__
            else:
                self.written += take
            self._inflight = ()
