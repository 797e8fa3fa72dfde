"""Dynamic batching: concurrent requests' rows for one model run as one batch.

``BatchingRuntime`` wraps a ``ModelRuntime`` and is one itself. ``run`` first checks the
caller's arrays against the model signature (rank, datatype, fixed dimensions, the same
number of rows in every input), so a malformed request is refused on its own, before it
joins a queue, and can never poison a batch. The queued rows are dispatched as one batch
as soon as

* they reach ``max_batch_size`` (a request that would overflow it dispatches the queue
  first, so no batch ever holds more), or exactly one of ``preferred_batch_sizes``;
* the oldest queued request has waited ``max_queue_delay``;
* a queued request has spent half of the time it had left when it arrived (its
  ``deadline`` given to ``run``, less the model's measured run time): the queue
  delay never exceeds a request's remaining time, and leaves it as much again for the
  run, the rest of its graph and the answer's way back;
* the next request's arrays differ beyond the batch dimension (a model with a dynamic
  trailing dimension): arrays that cannot be concatenated never share a batch.

Batches run one at a time (a model instance runs one batch; ``--workers`` gives one
instance per core): while a batch runs, the next one forms. So the queue delay and the
deadline rule above only start a batch when the model is free; when a batch finishes, the
rows that queued meanwhile go at once (they have waited a run already), full batches first.
Under load, batches therefore grow to what arrives during one run instead of what arrives
during ``max_queue_delay``; with an idle model a lone request waits ``max_queue_delay``.

A dispatched batch runs once, in a task of its own, on the concatenation of its requests'
arrays in queue order; the outputs are sliced back by row offsets, so every caller gets
exactly its own rows, in order. A failure fails the requests of that batch only, each with
its own copy of the model's error. A caller cancelled while queued is taken out of the
queue; one cancelled while its batch runs simply does not receive its rows. A request with
more than ``max_batch_size`` rows runs on its own, in chunks of ``max_batch_size`` rows.

The first call runs on its own too, at once: it is the repository's warm-up request, made
before the model serves anyone, so there is nobody to wait for.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from engine.errors import InternalError, InvalidRequest, ModelContractError, Unavailable
from engine.interfaces import BatchingOptions, ModelRun, ModelRuntime, RuntimeTraits

Key = tuple[tuple[int, ...], ...]  # every input's shape beyond the batch dimension


class _Entry:
    """One caller's rows waiting in the queue (compared by identity)."""

    __slots__ = ("deadline", "enqueued_ns", "future", "inputs", "rows")

    def __init__(
        self, inputs: Sequence[np.ndarray], rows: int, future: asyncio.Future[_Done], deadline: float | None
    ) -> None:
        self.inputs = inputs
        self.rows = rows
        self.future = future
        self.deadline = deadline
        self.enqueued_ns = time.perf_counter_ns()


class _Done:
    """What a batch hands back to one of its callers."""

    __slots__ = ("counted", "outputs", "pool_wait_ns", "size", "started_ns")

    def __init__(
        self, outputs: tuple[np.ndarray, ...], started_ns: int, pool_wait_ns: int, size: int, counted: bool
    ) -> None:
        self.outputs = outputs
        self.started_ns = started_ns
        self.pool_wait_ns = pool_wait_ns
        self.size = size
        self.counted = counted


class BatchingRuntime:
    """A ``ModelRuntime`` that batches concurrent calls to ``inner`` (see the module docstring).

    ``run_estimate_s``: how long a full batch is expected to run (the loader passes the inner
    model's measured warm-up); a request's rows wait at most half of what is left of its
    deadline once this is set aside. ``warm_up_alone``: the first call skips the queue (see the
    module docstring).
    """

    def __init__(
        self,
        inner: ModelRuntime,
        options: BatchingOptions,
        *,
        run_estimate_s: float = 0.0,
        warm_up_alone: bool = True,
    ) -> None:
        if options.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, not {options.max_batch_size}")
        self.inner = inner
        self.options = options
        self.path: Path = inner.path
        self.sha256: str = inner.sha256
        self.signature = inner.signature
        self.traits = RuntimeTraits(batching=True, terminates=inner.traits.terminates)
        self.max_batch_size = options.max_batch_size
        self._delay_s = max(0.0, options.max_queue_delay_s)
        self._preferred = frozenset(s for s in options.preferred_batch_sizes if s < options.max_batch_size)
        self._estimate_s = max(0.0, run_estimate_s)
        self._name = inner.path.name
        self._specs = tuple(
            (t.name, t.datatype.numpy_dtype, t.shape[1:] if t.shape else ()) for t in inner.signature.inputs
        )
        self._pending: list[_Entry] = []
        self._rows = 0
        self._key: Key = ()
        self._first_at = 0.0  # time.monotonic() when the oldest pending entry arrived
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._running: set[asyncio.Task[None]] = set()
        self._ready: deque[list[_Entry]] = deque()  # sealed batches (full, or a shape change) waiting
        self._closed = False
        self._warm = not warm_up_alone
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop the queue lives on
        self.batches = 0  # executed batches, for tests and diagnostics

    def __repr__(self) -> str:
        return f"BatchingRuntime({self.inner!r}, max_batch_size={self.max_batch_size})"

    def run_inline(self, inputs: Sequence[np.ndarray]) -> tuple[np.ndarray, ...]:
        """Never: rows wait for others in a queue (``traits.inline_max_rows`` is 0)."""
        raise InternalError(f"model '{self._name}' batches its runs and cannot run inline")

    async def run(self, inputs: Sequence[np.ndarray], *, deadline: float | None = None) -> ModelRun:
        """Run ``inputs`` as part of a batch; the result holds this caller's rows only."""
        rows, key = self._check(inputs)
        if self._closed:
            raise Unavailable(f"model '{self._name}' is closed")
        if rows == 0 or rows >= self.max_batch_size or not self._warm:
            self._warm = True
            return await self._alone(inputs, rows)
        loop = self._loop = asyncio.get_running_loop()
        entry = _Entry(inputs, rows, loop.create_future(), deadline)
        self._enqueue(entry, key)
        try:
            done = await entry.future
        except asyncio.CancelledError:
            self._withdraw(entry)
            raise
        return ModelRun(
            done.outputs,
            queue_ns=done.started_ns - entry.enqueued_ns + done.pool_wait_ns,
            batch_rows=done.size,
            counts_batch=done.counted,
        )

    # --- admission -------------------------------------------------------------------------------

    def _check(self, inputs: Sequence[np.ndarray]) -> tuple[int, Key]:
        """Rows and trailing shapes of a well-formed request; ``InvalidRequest`` otherwise."""
        if len(inputs) != len(self._specs):
            raise InternalError(
                f"model '{self._name}' takes {len(self._specs)} inputs, was given {len(inputs)}"
            )
        rows = -1
        key: list[tuple[int, ...]] = []
        for (name, dtype, tail), array in zip(self._specs, inputs, strict=True):
            where = f"model '{self._name}' input '{name}'"
            if array.ndim != len(tail) + 1:
                raise InvalidRequest(
                    f"{where} has rank {len(tail) + 1}, got an array of shape {list(array.shape)}",
                    tensor=name,
                )
            if array.dtype != dtype:
                raise InvalidRequest(f"{where} is {dtype}, got {array.dtype}", tensor=name)
            shape = array.shape[1:]
            if any(want != -1 and want != got for want, got in zip(tail, shape, strict=True)):
                raise InvalidRequest(f"{where} has shape {[-1, *tail]}, got {list(array.shape)}", tensor=name)
            if rows == -1:
                rows = array.shape[0]
            elif array.shape[0] != rows:
                raise InvalidRequest(
                    f"model '{self._name}' inputs disagree on rows: {rows} and {array.shape[0]} ('{name}')",
                    tensor=name,
                )
            key.append(shape)
        return max(rows, 0), tuple(key)

    def _enqueue(self, entry: _Entry, key: Key) -> None:
        if self._pending and (key != self._key or self._rows + entry.rows > self.max_batch_size):
            self._seal()
        now = time.monotonic()
        if not self._pending:
            self._key, self._first_at = key, now
        self._pending.append(entry)
        self._rows += entry.rows
        if self._rows >= self.max_batch_size or self._rows in self._preferred:
            self._seal()
            return
        if self._running:  # the model is busy: these rows go when it is free (``_next``)
            return
        due = self._first_at + self._delay_s
        if entry.deadline is not None:
            due = min(due, now + (entry.deadline - self._estimate_s - now) / 2)
        if self._timer is None or due < self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = due
            self._timer = asyncio.get_running_loop().call_later(max(0.0, due - now), self._on_timer)

    def _withdraw(self, entry: _Entry) -> None:
        """A queued caller gave up (cancelled): its rows leave the queue; the others stay."""
        try:
            self._pending.remove(entry)
        except ValueError:  # sealed or dispatched
            for batch in self._ready:
                if entry in batch:
                    batch.remove(entry)
                    break
            return  # (once dispatched, its batch runs on and the answer is dropped)
        self._rows -= entry.rows
        if not self._pending:
            self._stop_timer()

    def _on_timer(self) -> None:
        self._timer = None
        if self._pending and not self._running:
            self._seal()

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _seal(self) -> None:
        """The pending rows are a batch now: it runs next, or once the model is free."""
        entries, self._pending, self._rows = self._pending, [], 0
        self._stop_timer()
        self._ready.append(entries)
        if not self._running:
            self._next()

    def _next(self) -> None:
        """Start the next batch: a sealed one, else every row that queued during the last run."""
        while self._ready and not self._ready[0]:  # every caller of it gave up
            self._ready.popleft()
        if self._ready:
            entries = self._ready.popleft()
        elif self._pending:
            entries, self._pending, self._rows = self._pending, [], 0
            self._stop_timer()
        else:
            return
        task = asyncio.get_running_loop().create_task(self._execute(entries))
        self._running.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        if not self._closed and not self._running:
            self._next()

    # --- execution -------------------------------------------------------------------------------

    async def _execute(self, entries: list[_Entry]) -> None:
        started = time.perf_counter_ns()
        size = sum(e.rows for e in entries)
        self.batches += 1
        try:
            if len(entries) == 1:
                batch = entries[0].inputs
            else:
                batch = [np.concatenate([e.inputs[i] for e in entries]) for i in range(len(self._specs))]
            run = await self.inner.run(batch)
            outputs = run.outputs
            self._check_rows(outputs, size)
        except Exception as exc:
            for entry in entries:
                if not entry.future.done():
                    entry.future.set_exception(_own_copy(exc))
            return
        except asyncio.CancelledError:  # closed while running
            for entry in entries:
                if not entry.future.done():
                    entry.future.set_exception(Unavailable(f"model '{self._name}' was closed during its run"))
            raise
        pool_wait = run.queue_ns
        counted = False
        offset = 0
        for entry in entries:
            end = offset + entry.rows
            if not entry.future.done():  # not cancelled meanwhile
                part = tuple(out[offset:end] for out in outputs)
                entry.future.set_result(_Done(part, started, pool_wait, size, not counted))
                counted = True
            offset = end

    async def _alone(self, inputs: Sequence[np.ndarray], rows: int) -> ModelRun:
        """A request too big to share a batch (or empty): run it by itself, in chunks if need be."""
        if rows <= self.max_batch_size:
            run = await self.inner.run(inputs)
            self._check_rows(run.outputs, rows)
            self.batches += 1
            return ModelRun(run.outputs, queue_ns=run.queue_ns, batch_rows=rows, counts_batch=rows > 0)
        parts: list[tuple[np.ndarray, ...]] = []
        waited = 0
        for start in range(0, rows, self.max_batch_size):
            chunk = [a[start : start + self.max_batch_size] for a in inputs]
            part = await self.inner.run(chunk)
            waited += part.queue_ns
            self._check_rows(part.outputs, chunk[0].shape[0])
            self.batches += 1
            parts.append(part.outputs)
        outputs = tuple(np.concatenate(column) for column in zip(*parts, strict=True))
        return ModelRun(outputs, queue_ns=waited, batch_rows=self.max_batch_size, counts_batch=True)

    def _check_rows(self, outputs: Sequence[np.ndarray], rows: int) -> None:
        for spec, out in zip(self.signature.outputs, outputs, strict=False):
            got = out.shape[0] if out.ndim else None
            if got != rows:
                raise ModelContractError(
                    f"model '{self._name}' output '{spec.name}' has {got} rows for a batch of {rows}; "
                    "a batched model must answer one row per input row",
                    tensor=spec.name,
                )

    def close(self) -> None:
        """Fail queued callers (the model is going away), stop running batches, close ``inner``.

        May be called from any thread (a graph's models are closed when it is garbage
        collected): the queue is only touched on its event loop."""
        self._closed = True
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                current: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
            except RuntimeError:
                current = None
            if current is loop:
                self._abort()
            else:
                with contextlib.suppress(RuntimeError):  # the loop stopped meanwhile
                    loop.call_soon_threadsafe(self._abort)
        self.inner.close()

    def _abort(self) -> None:
        self._stop_timer()
        pending, self._pending, self._rows = self._pending, [], 0
        while self._ready:
            pending.extend(self._ready.popleft())
        for entry in pending:
            if not entry.future.done():
                entry.future.set_exception(Unavailable(f"model '{self._name}' was closed"))
        for task in list(self._running):
            task.cancel()


def _own_copy(exc: Exception) -> Exception:
    """A copy of ``exc`` for one caller: the executor names its node in the error it gets, so
    callers of one batch must not share (and rename) one exception object."""
    clone = BaseException.__new__(type(exc), *exc.args)
    clone.__dict__.update(getattr(exc, "__dict__", {}))
    clone.__cause__ = exc.__cause__ or exc
    return clone
