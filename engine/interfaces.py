"""The small interfaces that implementations fulfil.

Each has a real implementation elsewhere (``engine.runtimes.onnx``, …) and a
tiny in-memory one in ``tests/fakes.py`` so the executor and the graph compiler
can be tested without onnxruntime or gRPC. Concrete classes are wired together
in one place: the server bootstrap (``engine.server``).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

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


@dataclass(frozen=True, slots=True)
class RuntimeTraits:
    """What a loaded model's runtime can do, declared once when it is loaded.

    ``inline_max_rows``: batches of at most this many rows finish synchronously on the
    event loop through ``run_inline`` (0: never; the executor then awaits ``run``).
    ``batching``: concurrent runs may share one batch, and ``ModelRun.batch_rows`` says how
    many rows it had. ``terminates``: a run whose caller gives up (cancellation, a timeout)
    stops early instead of holding a thread to the end.
    """

    inline_max_rows: int = 0
    batching: bool = False
    terminates: bool = False


@dataclass(frozen=True, slots=True)
class ModelRun:
    """What one ``ModelRuntime.run`` produced for its caller.

    ``outputs`` in ``signature.outputs`` order, the caller's rows only; ``queue_ns``: how long
    the run waited (for a pool thread, for a batch to fill) before computing; ``batch_rows``:
    a batching runtime's batch that these rows ran in (0 when not batched); ``counts_batch``:
    whether this caller is the one that counts that batch in the statistics (one per batch).
    """

    outputs: tuple[np.ndarray, ...]
    queue_ns: int = 0
    batch_rows: int = 0
    counts_batch: bool = False


@runtime_checkable
class ModelRuntime(Protocol):
    """One loaded model, ready to run batches.

    Both ways of running take arrays in ``signature.inputs`` order and return arrays in
    ``signature.outputs`` order. ``run_inline`` is the synchronous path, for at most
    ``traits.inline_max_rows`` rows (the model's measured run time is small enough to
    block the event loop for). ``run`` never blocks the event loop for longer than that:
    a slow model runs in a thread pool. ``deadline`` is the absolute ``time.monotonic()``
    by which the caller needs the answer (the request deadline or the node's timeout,
    whichever comes first; None = no limit): a batching runtime never holds rows past it.
    """

    path: Path
    sha256: str
    signature: ModelSignature
    traits: RuntimeTraits

    def run_inline(self, inputs: Sequence[np.ndarray]) -> tuple[np.ndarray, ...]: ...

    async def run(self, inputs: Sequence[np.ndarray], *, deadline: float | None = None) -> ModelRun: ...

    def close(self) -> None: ...


class RuntimeFactory(Protocol):
    """Loads model files and owns what their runs share (sessions, thread pools).

    ``load`` raises ``ValueError`` with a one-line, caller-safe reason when a file cannot be
    served. ``queue_depth`` (runs waiting for a pool thread) and ``terminated_runs`` (runs
    stopped because their caller gave up) are read by metrics; ``close`` ends every pool.
    """

    def load(self, path: Path, options: ModelOptions) -> ModelRuntime: ...

    @property
    def queue_depth(self) -> int: ...

    @property
    def terminated_runs(self) -> int: ...

    def close(self) -> None: ...


MODEL_REFERENCE_PREFIXES = ("models:/", "https://", "http://")
"""How a ``model:`` value that is not a file of the graph folder begins (``http://`` only to refuse it)."""


def is_model_reference(text: str) -> bool:
    """Whether a ``model:`` value names a registry model or a URL rather than a file in the graph folder."""
    return text.startswith(MODEL_REFERENCE_PREFIXES)


@dataclass(frozen=True, slots=True)
class ModelArtifact:
    """A model named by reference, fetched and digest-checked into the local content-addressed cache.

    ``reference``: as the graph wrote it (``models:/fraud@champion``); ``resolved``: the immutable
    thing it named when fetched (``models:/fraud/3``; a pinned URL is itself); ``path``: the verified
    file in the cache; ``sha256``: its digest (hex).
    """

    reference: str
    resolved: str
    path: Path
    sha256: str


class ModelSource(Protocol):
    """Resolves ``model:`` references (registry models, pinned URLs) to local files before compiling.

    ``identify`` answers cheaply what a reference names *now* (an alias becomes the version it points
    at; an immutable reference is itself), so a reload can tell that an alias moved without fetching.
    ``fetch`` returns the verified local copy, downloading it into the cache once. ``sha256`` is the
    graph's pin (required for URLs, optional otherwise): a different digest is refused. Both are
    blocking (the graph loader runs in a thread) and raise ``ValueError`` with a one-line,
    caller-safe reason naming the reference (no addresses or credentials) when it cannot be served.
    """

    def identify(self, reference: str, sha256: str | None = None) -> str: ...

    def fetch(self, reference: str, sha256: str | None = None) -> ModelArtifact: ...


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
    redacted: tuple[str, ...] = ()  # explain: tensors (input or output names) withheld by the policy


class Observer(Protocol):
    """Receives one frozen event per executed node (explain, tracing, logging)."""

    def on_node(self, event: NodeEvent) -> None: ...


class RecordPolicy(Protocol):
    """What a request record needs of a graph's logging policy (``engine.graph`` fulfils it)."""

    @property
    def nodes(self) -> bool: ...

    @property
    def redact(self) -> frozenset[str]: ...

    @property
    def hash(self) -> frozenset[str]: ...

    @property
    def max_tensor_elements(self) -> int: ...


class ShadowResults(Protocol):
    """One request's shadow outcomes as they settle (``engine.shadow.RequestShadows``)."""

    @property
    def pending(self) -> int: ...

    @property
    def disagreed(self) -> bool: ...

    def so_far(self) -> Mapping[str, Any]: ...

    async def settled(self, timeout_s: float) -> Mapping[str, Any]: ...


@dataclass(frozen=True, slots=True)
class RequestOutcome:
    """Everything one served request leaves for its request-log record, as one frozen value.

    Built by the inference core once the status is known. ``inputs`` are in the graph's
    input order, ``outputs`` every output the graph produced (not only those asked for),
    ``events`` the node events when the policy keeps them. ``reason`` says why the
    request is logged (``sample``, ``error``, ``shadow_disagreement``: kept only if a shadow
    disagrees). ``time_ns`` is the wall-clock arrival; ``latency_us`` the time in the core.
    """

    request_id: str
    trace_id: str
    graph: str
    version: str
    protocol: str
    models: Mapping[str, str]
    inputs: Mapping[str, np.ndarray]
    outputs: Mapping[str, np.ndarray]
    events: Sequence[NodeEvent]
    status: str
    error: str
    latency_us: int
    time_ns: int
    policy: RecordPolicy
    reason: str
    shadows: ShadowResults | None = None
    violations: tuple[str, ...] = ()  # ``flag`` data-contract violations (``column rule row N ...``)
    model_sources: Mapping[str, str] = field(default_factory=dict)  # node -> registry version / URL


class RequestRecorder(Protocol):
    """Writes one request-log record per logged request (``engine.observability.recorder``).

    The core asks ``observer`` for a per-request observer when the graph's policy logs
    anything (it keeps the node events and forwards each to ``forward``), and hands the
    request's ``RequestOutcome`` to ``record`` once the status is known. ``record`` never
    blocks and never raises; with shadows still running the record is built once they
    settle (bounded).
    """

    def observer(self, forward: Observer | None) -> EventLog: ...

    def record(self, outcome: RequestOutcome) -> None: ...


class EventLog(Observer, Protocol):
    """An observer that keeps the events it saw (and forwards them)."""

    @property
    def events(self) -> Sequence[NodeEvent]: ...


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
