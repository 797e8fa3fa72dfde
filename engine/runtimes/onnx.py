"""The ONNX model runtime: one onnxruntime session per model file, run inline or in a thread pool.

``OnnxRuntimeFactory.load`` checks a model file's size against ``max_model_bytes`` before
reading a byte of it, hashes it in chunks (never holding it whole), lets onnxruntime read it
once from its path (so the file is in memory once, as the session's own), builds one
``InferenceSession`` (shared by every graph node that loads the same file with the
same thread count), times a warm-up on synthetic input and decides how to run it:

* **inline** — ``session.run`` is called on the event loop, for batches of at most
  ``inline_max_rows`` rows. With ``execution: auto`` a model runs inline when its
  batch-1 median run is under ``inline_threshold_ns`` (default 50 µs): handing such a
  run to a thread costs about as much as the run itself (about 55 µs measured per
  ``run_in_executor`` round trip), and blocking the loop for < 50 µs is harmless.
  ``inline_max_rows`` is the largest batch estimated, from a second warm-up at 64
  rows, to still run under the threshold; bigger batches go to the pool.
* **pool** — ``session.run`` runs in the factory's bounded ``ThreadPoolExecutor``
  (onnxruntime releases the GIL while it runs), so the event loop never blocks. Each
  pool run has its own ``RunOptions``: when its caller gives up (a node or shadow
  timeout, a request deadline, a drain cancels it), ``terminate`` is set and
  onnxruntime stops the run before its next graph node, so an abandoned run does not
  hold a pool thread to the end (``OnnxModel.terminated`` counts them).

``ModelOptions.execution`` overrides the choice (``"inline"``: always, whatever the
batch size; ``"pool"``: never). The measured figures stay on the model as
``warmup_run_ns`` and ``warmup_probe_ns``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from engine.errors import InternalError, ModelContractError
from engine.interfaces import ModelOptions, ModelRun, ModelSignature, RuntimeTraits
from engine.runtimes.batching import BatchingRuntime
from engine.runtimes.onnx_session import (
    OutputShape,
    Warmup,
    create_session,
    load_problem,
    measure,
    output_shapes,
    quiet_run_options,
    read_signature,
    translate_run_error,
)

DEFAULT_INLINE_THRESHOLD_NS = 50_000
INLINE_ROWS_CAP = 4096
WARMUP_RUNS = 50
WARMUP_BUDGET_NS = 50_000_000
EXECUTION_MODES = ("auto", "inline", "pool")


@dataclass(slots=True)
class _SharedSession:
    """A session with the number of loaded models that use it."""

    session: ort.InferenceSession | None  # None once the last user closed it
    signature: ModelSignature
    warmup: Warmup
    shapes: tuple[OutputShape, ...] = ()
    users: int = 0


class RunTerminated(Exception):
    """A pool run stopped by its ``terminate`` flag: nobody awaits its answer any more."""


class OnnxModel:
    """One loaded ONNX model (``ModelRuntime``). Built by ``OnnxRuntimeFactory.load``."""

    def __init__(
        self,
        *,
        path: Path,
        sha256: str,
        shared: _SharedSession,
        inline_max_rows: int,
        pool: ThreadPoolExecutor,
        release: Callable[[_SharedSession], None],
        on_terminated: Callable[[], None] = lambda: None,
    ) -> None:
        self.path = path
        self.sha256 = sha256
        self.signature = shared.signature
        self.inline_max_rows = inline_max_rows
        self.inline = inline_max_rows > 0
        self.traits = RuntimeTraits(inline_max_rows=inline_max_rows, terminates=True)
        self.warmup_run_ns = shared.warmup.run_ns
        self.warmup_probe_ns = shared.warmup.probe_run_ns
        self.warmup_error = shared.warmup.error
        self._shared = shared
        self._session: ort.InferenceSession | None = shared.session
        self._run_direct = _direct_run(shared.session)
        self._pool = pool
        self._release = release
        self._name = path.name
        self._input_names = tuple(t.name for t in shared.signature.inputs)
        self._output_names = [t.name for t in shared.signature.outputs]
        self._output_dtypes = tuple(t.datatype.numpy_dtype for t in shared.signature.outputs)
        self._output_shapes = shared.shapes
        # (name, dtype, shape) per output, and whether any shape has something to check
        shapes: list[OutputShape | None] = [*self._output_shapes]
        shapes += [None] * (len(self._output_names) - len(shapes))
        self._outputs_checked = tuple(zip(self._output_names, self._output_dtypes, shapes, strict=False))
        self._run_options = quiet_run_options()
        self.terminated = 0  # pool runs stopped part-way because their caller gave up
        self._on_terminated = on_terminated

    def __repr__(self) -> str:
        mode = f"inline up to {self.inline_max_rows} rows" if self.inline else "pool"
        return f"OnnxModel({self._name!r}, {mode}, warmup_run_ns={self.warmup_run_ns})"

    def run_inline(self, inputs: Sequence[np.ndarray]) -> tuple[np.ndarray, ...]:
        """Run one batch on the calling thread (the event loop, for at most ``inline_max_rows`` rows)."""
        return self.run_sync(inputs)

    async def run(self, inputs: Sequence[np.ndarray], *, deadline: float | None = None) -> ModelRun:
        """Run one batch: arrays in ``signature.inputs`` order, results in ``signature.outputs`` order.

        Batches of at most ``inline_max_rows`` rows run in place; bigger ones in the pool. The
        deadline is the caller's to enforce (by cancelling): a cancelled pool run terminates."""
        rows = inputs[0].shape[0] if inputs and inputs[0].ndim else 1
        if rows <= self.inline_max_rows:
            return ModelRun(self.run_sync(inputs))
        loop = asyncio.get_running_loop()
        options = quiet_run_options()  # this run's own: setting ``terminate`` stops only it
        submitted = time.perf_counter_ns()
        try:
            started, outputs = await loop.run_in_executor(self._pool, self._timed_run, inputs, options)
        except RuntimeError as exc:  # the pool was shut down
            raise InternalError(f"model '{self._name}': {exc}") from exc
        except asyncio.CancelledError:
            # A run not yet started was taken off the queue; a running one stops at its next node.
            options.terminate = True
            raise
        return ModelRun(outputs, queue_ns=started - submitted)

    def _timed_run(
        self, inputs: Sequence[np.ndarray], options: ort.RunOptions
    ) -> tuple[int, tuple[np.ndarray, ...]]:
        """``run_sync`` in a pool thread, with the moment the thread picked the job up."""
        started = time.perf_counter_ns()
        try:
            return started, self.run_sync(inputs, options)
        except Exception:
            if options.terminate:  # nobody waits for this answer any more
                self.terminated += 1
                self._on_terminated()
            raise

    def run_sync(
        self, inputs: Sequence[np.ndarray], options: ort.RunOptions | None = None
    ) -> tuple[np.ndarray, ...]:
        """The blocking run: what ``run`` calls inline or in the pool."""
        run = self._run_direct
        if run is None:
            raise InternalError(f"model '{self._name}' is closed")
        if len(inputs) != len(self._input_names):
            raise InternalError(
                f"model '{self._name}' takes {len(self._input_names)} inputs, was given {len(inputs)}"
            )
        try:
            feed = dict(zip(self._input_names, inputs, strict=False))  # lengths checked above
            outputs = run(self._output_names, feed, options or self._run_options)
        except Exception as exc:
            if options is not None and options.terminate:  # stopped on purpose: counted, not logged
                raise RunTerminated(f"model '{self._name}': run stopped, its caller gave up") from None
            raise translate_run_error(exc, self._name) from exc
        return self._checked(outputs, inputs)

    def _checked(
        self, outputs: list[np.ndarray], inputs: Sequence[np.ndarray] = ()
    ) -> tuple[np.ndarray, ...]:
        """The outputs, if they keep the model's declared signature (count, dtype, rank, fixed
        dimensions, and a batch dimension as long as the input's it is declared with)."""
        if len(outputs) != len(self._output_dtypes):
            raise ModelContractError(
                f"model '{self._name}' returned {len(outputs)} outputs, declares {len(self._output_dtypes)}"
            )
        for (name, dtype, shape), array in zip(self._outputs_checked, outputs, strict=False):  # checked above
            if not isinstance(array, np.ndarray) or array.dtype != dtype:
                got = getattr(array, "dtype", type(array).__name__)
                raise ModelContractError(
                    f"model '{self._name}' output '{name}' is {got}, declares {dtype}", tensor=name
                )
            if shape is not None and shape.rank is not None:
                problem = _shape_problem(array.shape, shape, inputs)
                if problem:
                    raise ModelContractError(f"model '{self._name}' output '{name}' {problem}", tensor=name)
        return tuple(outputs)

    def close(self) -> None:
        """Release this model's hold on the session; the last holder frees it."""
        if self._session is not None:
            self._session = None
            self._run_direct = None
            self._release(self._shared)


class OnnxRuntimeFactory:
    """Loads ONNX model files (``RuntimeFactory``); owns the sessions and the shared thread pool.

    ``max_workers``: threads in the pool for slow models (default: CPU count, at most 8).
    ``inline_threshold_ns``: with ``execution: auto``, batches estimated to run faster than this
    run inline on the event loop; slower ones in the pool.
    ``warmup_runs``: timed batch-1 runs at load (fewer when a model is slow).
    ``max_model_bytes``: a bigger model file is refused from its size alone, unread (0: no limit).
    """

    def __init__(
        self,
        *,
        max_workers: int | None = None,
        inline_threshold_ns: int = DEFAULT_INLINE_THRESHOLD_NS,
        warmup_runs: int = WARMUP_RUNS,
        shadow_workers: int = 1,
        max_model_bytes: int = 0,
    ) -> None:
        workers = max_workers if max_workers is not None else min(8, os.cpu_count() or 1)
        self.inline_threshold_ns = inline_threshold_ns
        self.warmup_runs = warmup_runs
        self.max_model_bytes = max_model_bytes  # 0: no limit
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="onnx")
        # Shadow candidates run here (``shadow_workers`` at a time, as many as the shadow pool lets run):
        # a slow or hung candidate holds one of these threads, never one a live model needs, and a
        # candidate never runs inline on the event loop.
        self._shadow_pool = ThreadPoolExecutor(
            max_workers=shadow_workers, thread_name_prefix="onnx-shadow", initializer=_background_thread
        )
        self._sessions: dict[tuple[str, str, int], _SharedSession] = {}
        self._lock = threading.Lock()
        # Releases reach the closing thread through a SimpleQueue: ``put`` is safe from a garbage
        # collector's finalizer (a dropped graph version closes its models from one), which may run
        # on any thread at any allocation, even inside an executor's ``submit`` or under ``_lock``:
        # a submit or a lock taken there deadlocked.
        self._releases: queue.SimpleQueue[_SharedSession | threading.Event | None] = queue.SimpleQueue()
        self._closer = threading.Thread(target=self._closing, name="onnx-close", daemon=True)
        self._closer.start()
        self.terminated_runs = 0  # pool runs (live or shadow) stopped because their caller gave up

    def _count_terminated(self) -> None:
        with self._lock:
            self.terminated_runs += 1

    def load(self, path: Path, options: ModelOptions) -> OnnxModel | BatchingRuntime:
        """Load ``path``; ``ValueError`` with a one-line reason if it cannot be served.

        With ``options.batching`` the model comes wrapped in a ``BatchingRuntime``."""
        path = Path(path)
        if options.execution not in EXECUTION_MODES:
            modes = ", ".join(EXECUTION_MODES)
            raise ValueError(f"execution must be one of {modes}, not {options.execution!r}")
        if options.intra_op_threads < 1:
            raise ValueError(f"threads must be at least 1, not {options.intra_op_threads}")
        try:
            before = path.stat()
        except OSError as exc:
            raise ValueError(f"cannot read model '{path.name}': {exc.strerror or exc}") from exc
        if self.max_model_bytes and before.st_size > self.max_model_bytes:
            raise ValueError(
                f"model '{path.name}' is {before.st_size:,} bytes, over the limit of "
                f"{self.max_model_bytes:,} (setting max_model_bytes); it was not read"
            )
        try:
            sha256 = _file_sha256(path)
        except OSError as exc:
            raise ValueError(f"cannot read model '{path.name}': {exc.strerror or exc}") from exc
        key = (str(path.resolve()), sha256, options.intra_op_threads)
        with self._lock:
            shared = self._sessions.get(key)
            if shared is None:
                shared = self._open(path, options.intra_op_threads)
                if _changed(path, before):  # replaced while we read it: the hash may not be of these bytes
                    raise ValueError(f"model '{path.name}' changed while it was being loaded; reload again")
                self._sessions[key] = shared
            shared.users += 1
        if options.shadow:
            inline_rows = 0
        elif options.execution == "auto":
            inline_rows = shared.warmup.rows_within(self.inline_threshold_ns, INLINE_ROWS_CAP)
        else:
            inline_rows = sys.maxsize if options.execution == "inline" else 0
        model = OnnxModel(
            path=path,
            sha256=sha256,
            shared=shared,
            inline_max_rows=inline_rows,
            pool=self._shadow_pool if options.shadow else self._pool,
            release=self._release,
            on_terminated=self._count_terminated,
        )
        if options.batching is None:
            return model
        estimate_ns = shared.warmup.probe_run_ns or shared.warmup.run_ns  # a full batch: the 64-row probe
        return BatchingRuntime(
            model, options.batching, run_estimate_s=estimate_ns / 1e9 if estimate_ns else 0.0
        )

    def _open(self, path: Path, threads: int) -> _SharedSession:
        name = path.name
        try:
            session = create_session(str(path), threads)
        except Exception as exc:
            raise ValueError(f"cannot load model '{name}': {load_problem(exc, name)}") from exc
        try:
            signature = read_signature(session)
        except ValueError as exc:
            raise ValueError(f"cannot serve model '{name}': {exc}") from exc
        warmup = measure(session, signature, runs=self.warmup_runs, budget_ns=WARMUP_BUDGET_NS, model=name)
        return _SharedSession(session, signature, warmup, output_shapes(session))

    def _release(self, shared: _SharedSession) -> None:
        """A model let go of ``shared``: the closing thread counts it and frees the last one's session.

        Called from ``OnnxModel.close``, itself called from any thread and from finalizers; it only
        queues (no lock, no executor), so it can never block or deadlock its caller."""
        self._releases.put(shared)

    def _closing(self) -> None:
        """The closing thread: counts releases, and frees sessions nobody uses on this thread.

        Freeing a large session takes milliseconds with the GIL held, whichever thread runs it, so
        the loop still waits for it; what keeps that short is malloc on huge pages
        (engine/fleet/malloc.py: ~1 ms for 200 MB of weights instead of ~45). What this thread
        spares the caller (the event loop, when a reload drops the old version) is running it."""
        stopping = False  # after close(): what is queued still gets counted and freed, then it ends
        while True:
            if not stopping:
                item = self._releases.get()
            else:
                try:
                    item = self._releases.get_nowait()
                except queue.Empty:
                    return
            if item is None:
                stopping = True
            elif isinstance(item, threading.Event):  # settle(): every earlier release is done
                item.set()
            else:
                self._let_go(item)

    def _let_go(self, shared: _SharedSession) -> None:
        with self._lock:
            shared.users -= 1
            if shared.users > 0:
                return
            session, shared.session = shared.session, None
            for key, value in list(self._sessions.items()):
                if value is shared:
                    del self._sessions[key]
        del session  # the last reference: the session is freed here, on this thread

    def settle(self, timeout_s: float = 10.0) -> None:
        """Wait until every release queued so far has been counted (and its session freed)."""
        done = threading.Event()
        self._releases.put(done)
        if self._closer.is_alive():
            done.wait(timeout_s)

    @property
    def open_sessions(self) -> int:
        """Sessions in use, once the releases queued so far are counted."""
        self.settle()
        return len(self._sessions)

    @property
    def queue_depth(self) -> int:
        """Model runs submitted to the thread pool and not yet started."""
        return self._pool._work_queue.qsize()

    def close(self) -> None:
        """Shut the thread pool down (waiting for running batches) and drop every session."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._shadow_pool.shutdown(wait=False, cancel_futures=True)  # a hung candidate is not waited for
        with self._lock:
            self._sessions.clear()
        self._releases.put(None)
        self._closer.join(30)


def _file_sha256(path: Path) -> str:
    """The file's SHA-256, read in chunks (hashlib releases the GIL on each)."""
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def _changed(path: Path, before: os.stat_result) -> bool:
    try:
        after = path.stat()
    except OSError:
        return True
    return (after.st_size, after.st_mtime_ns, after.st_ino) != (
        before.st_size,
        before.st_mtime_ns,
        before.st_ino,
    )


def _direct_run(session: ort.InferenceSession | None) -> Callable[..., list[np.ndarray]] | None:
    """The session's own ``run``, below onnxruntime's Python wrapper.

    The wrapper checks, on every call, what holds by construction here: every declared input is
    fed (``run_sync`` feeds the signature's inputs, all of them), the feed holds numpy arrays and
    no ``OrtValue`` of another session, graph capture is off and the only provider is the CPU, so
    there is no provider to fall back to. Skipping it saves 2 to 3 µs a run. An onnxruntime without
    the attribute gets the wrapper."""
    if session is None:
        return None
    inner = getattr(session, "_sess", None)
    run: Callable[..., list[np.ndarray]] | None = getattr(inner, "run", None)
    return run if callable(run) else session.run


def _shape_problem(got: tuple[int, ...], declared: OutputShape, inputs: Sequence[np.ndarray]) -> str:
    """How a result's shape breaks its declaration ("" when it keeps it)."""
    if len(got) != declared.rank:
        return f"has rank {len(got)}, declares rank {declared.rank}"
    for axis, size in declared.fixed:
        if got[axis] != size:
            return f"has dimension {axis} of {got[axis]}, declares {size}"
    if declared.rows_of is not None and declared.rows_of < len(inputs):
        source = inputs[declared.rows_of]
        rows = int(source.shape[0]) if source.ndim else 1
        if got and got[0] != rows:
            return f"has {got[0]} rows for a batch of {rows} (declared with the input's batch dimension)"
    return ""


SHADOW_NICE = 19
"""Niceness of shadow threads where the idle scheduling class is not available."""


def _background_thread() -> None:
    """Run this (shadow) thread only on CPU time live work leaves idle: Linux's ``SCHED_IDLE``
    class (a runnable normal thread, such as the event loop waking up, preempts it at once), or
    failing that the lowest niceness. Both apply per thread id; elsewhere the thread keeps the
    normal priority."""
    tid = threading.get_native_id()
    try:
        os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
        return
    except (AttributeError, OSError):
        pass
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, tid, SHADOW_NICE)
