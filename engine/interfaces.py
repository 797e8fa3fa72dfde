"""The small interfaces that implementations fulfil.

Each has a real implementation elsewhere (``engine.runtimes.onnx``, …) and a
tiny in-memory one in ``tests/fakes.py`` so the executor and the graph compiler
can be tested without onnxruntime or gRPC. Concrete classes are wired together
in one place: the server bootstrap (``engine.server``).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from engine.tensors import DataType, TensorSpec


@dataclass(frozen=True, slots=True)
class ModelSignature:
    """A model's declared inputs and outputs, in the model's own order."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def input(self, name: str) -> TensorSpec | None:
        return next((t for t in self.inputs if t.name == name), None)

    def output(self, name: str) -> TensorSpec | None:
        return next((t for t in self.outputs if t.name == name), None)


@dataclass(frozen=True, slots=True)
class BatchingOptions:
    """``batching:`` on a model node: concurrent requests' rows run as one batch.

    ``max_batch_size``: most rows in one run; ``max_queue_delay_s``: longest a request's rows
    wait for others (never past the request's deadline); ``preferred_batch_sizes``: queued row
    counts that are dispatched at once, without waiting for the delay.
    """

    max_batch_size: int
    max_queue_delay_s: float = 0.002
    preferred_batch_sizes: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class ModelOptions:
    """Per-model settings a graph node may give (``threads:``, ``execution:``, ``batching:``)."""

    intra_op_threads: int = 1
    execution: str = "auto"  # "auto" (measured at load) | "inline" | "pool"
    batching: BatchingOptions | None = None  # None: every request runs on its own
    shadow: bool = False  # a shadow candidate: never inline, in a pool of its own (live models never wait)


@runtime_checkable
class ModelRuntime(Protocol):
    """One loaded model, ready to run batches.

    ``run`` takes arrays in ``signature.inputs`` order and returns arrays in
    ``signature.outputs`` order. It never blocks the event loop for longer
    than the model's measured run time (a slow model runs in a thread pool).
    """

    path: Path
    sha256: str
    signature: ModelSignature

    async def run(self, inputs: Sequence[np.ndarray]) -> tuple[np.ndarray, ...]: ...

    def close(self) -> None: ...


class RuntimeFactory(Protocol):
    """Loads a model file; raises ``GraphInvalid``-friendly ``ValueError`` text on failure."""

    def load(self, path: Path, options: ModelOptions) -> ModelRuntime: ...


QUEUE_WAIT_NS: ContextVar[int] = ContextVar("engine_queue_wait_ns", default=0)
"""Set by a runtime inside ``run``: how long this run waited for a thread before computing.

``run`` is awaited directly (not as a task), so the executor reads the value right after the
await, in the same context; a runtime that never queues leaves it at 0."""

RUN_DEADLINE: ContextVar[float | None] = ContextVar("engine_run_deadline", default=None)
"""Set by the executor before it awaits a runtime's ``run`` (one that may suspend): the absolute
``time.monotonic()`` by which the run must be done, the request deadline or the node's timeout,
whichever comes first; None = no limit. A batching runtime never holds rows past it."""

BATCH_RUN: ContextVar[tuple[int, bool]] = ContextVar("engine_batch_run", default=(0, False))
"""Set by a batching runtime inside ``run``: (rows of the batch this request's rows ran in,
whether this request is the one that counts that batch in the statistics; one per batch).
The executor resets it to ``(0, False)`` before a run that may suspend and reads it after."""


@dataclass(frozen=True, slots=True)
class NodeEvent:
    """What one node did for one request; handed to observers after it ran."""

    graph: str
    version: str
    node: str
    kind: str
    start_ns: int
    duration_ns: int
    rows: int
    inputs: dict[str, np.ndarray] = field(default_factory=dict)
    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    branch: dict[str, int] | None = None  # switch/split: rows sent to each branch
    error: str | None = None
    queue_ns: int = 0  # of duration_ns, the time spent waiting for a thread (model nodes)
    batch_size: int = 0  # batching model nodes: rows of the batch this request's rows ran in
    feature_status: dict[str, np.ndarray] | None = None  # features nodes: field -> FeatureStatus per row
    source: str | None = None  # features nodes: the source read


class Observer(Protocol):
    """Receives one frozen event per executed node (explain, tracing, logging)."""

    def on_node(self, event: NodeEvent) -> None: ...


class RequestRecorder(Protocol):
    """Writes one request-log record per logged request (``engine.observability.recorder``).

    The protocol edge asks ``observer`` for a per-request observer when the graph's policy
    logs anything (it keeps the node events and forwards them to ``forward``), and calls
    ``record`` once the status is known. ``record`` never blocks and never raises. ``shadows``
    (an ``engine.shadow.RequestShadows``) holds the request's shadow outcomes: the record is
    built once they settle (bounded), and a ``shadow_disagreement`` reason keeps it only if one
    disagreed.
    """

    def observer(self, forward: Observer | None) -> Observer: ...

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
    ) -> None: ...


class FeatureStatus(enum.IntEnum):
    """Where one fetched value came from (one per key and field)."""

    PRESENT = 0  # read from the store now
    CACHED = 1  # served from the cache (within its ttl)
    MISSING = 2  # the entity or field does not exist: the field's default was used
    STALE = 3  # older than max_age: the default was used
    TIMED_OUT = 4  # the store did not answer in time: the default was used
    FAILED = 5  # the store failed (connection refused, bad value): the default was used


FEATURE_STATUS_NAMES: tuple[str, ...] = tuple(s.name.lower() for s in FeatureStatus)
"""``present cached missing stale timed_out failed``: how statuses are named in records, traces, metrics."""


@dataclass(frozen=True, slots=True)
class FeatureField:
    """A field a graph wants from a source: its datatype and the default for absent values."""

    name: str
    datatype: DataType
    default: object = 0


@dataclass(frozen=True, slots=True)
class FeatureBatch:
    """Fetched values, rows aligned with the keys asked for.

    ``values[field]`` is an array of ``len(keys)`` rows (shape ``[n]``, datatype as
    declared); ``status`` is a uint8 array ``[n, len(fields)]`` of ``FeatureStatus``.
    """

    values: dict[str, np.ndarray]
    status: np.ndarray


@runtime_checkable
class FeatureSource(Protocol):
    """An online feature store, declared once in the server config and named by graphs.

    ``fetch`` reads many keys' fields in one round trip where the store allows it and
    never raises for missing data (defaults + status instead). It raises
    ``engine.errors.DependencyUnavailable`` when the store cannot be reached at all, so
    a node can choose between failing (UNAVAILABLE) and defaults. Timeouts are the
    caller's: ``fetch`` is cancelled when the node's budget runs out.
    """

    name: str

    def schema(self) -> Mapping[str, DataType] | None:
        """The fields this source declares, when it knows them (for validation)."""
        ...

    async def fetch(
        self, keys: Sequence[str], fields: Sequence[FeatureField], *, max_age_s: float | None = None
    ) -> FeatureBatch: ...

    async def close(self) -> None: ...


class FeatureCatalog(Protocol):
    """The feature sources a server declared (``feature_sources:`` in engine.yaml), by name.

    The graph layer resolves a ``features:`` node's source through this, so it never imports
    an adapter; the server builds the concrete catalog (``adapters.registry.FeatureCatalog``).
    """

    def get(self, name: str) -> FeatureSource | None: ...

    def names(self) -> Sequence[str]: ...

    def cached(self, name: str, ttl_s: float) -> FeatureSource:
        """Source ``name`` behind an in-memory TTL cache; the same object for the same (name, ttl)."""
        ...
