"""The engine's one error tree.

Every failure the engine knows about is one of these classes. ``status_of`` maps each
class, by walking its MRO in ``STATUS_OF`` (the one table), to exactly one
protocol-neutral ``Status`` (the canonical codes of gRPC and Google APIs); each
front door then maps a ``Status`` to its own codes in one table of its own
(``engine.protocol.status`` for gRPC, ``engine.http.status`` for HTTP). Anything
that is not an ``EngineError`` is our bug and becomes INTERNAL with a generic
message and a logged error id (``engine.serving.failure``).

    EngineError
    ├── InvalidRequest ................ INVALID_ARGUMENT  a malformed request
    │   └── TensorError ............... INVALID_ARGUMENT  names the tensor at fault
    │       └── ContractViolation ..... INVALID_ARGUMENT  a value broke a `reject` data contract
    ├── NotFound ...................... NOT_FOUND
    │   └── GraphNotFound ............. NOT_FOUND         unknown graph or version
    ├── Unavailable ................... UNAVAILABLE       retryable
    │   ├── GraphUnavailable .......... UNAVAILABLE       loading, failed or unloaded
    │   ├── ServerNotReady ............ UNAVAILABLE       starting or draining
    │   └── DependencyUnavailable ..... UNAVAILABLE       a store a node needs is down
    ├── Overloaded .................... RESOURCE_EXHAUSTED  shed by admission control
    ├── ResourceExhausted ............. RESOURCE_EXHAUSTED  a request asked for more memory than there is
    ├── DeadlineExceeded .............. DEADLINE_EXCEEDED request deadline or node timeout
    ├── Unauthenticated ............... UNAUTHENTICATED
    ├── PermissionDenied .............. PERMISSION_DENIED
    ├── Unimplemented ................. UNIMPLEMENTED
    ├── FailedPrecondition ............ FAILED_PRECONDITION  admin action invalid now
    │   └── GraphInvalid .............. FAILED_PRECONDITION  a graph failed validation/load
    └── InternalError ................. INTERNAL          our bug
        └── ModelContractError ........ INTERNAL          a model broke its declared signature

Third-party exceptions (onnxruntime, yaml, redis, …) are translated into this
tree where they enter, with ``raise … from exc``.
"""

from __future__ import annotations

import asyncio
import enum
import secrets
from collections.abc import Sequence
from dataclasses import dataclass


class EngineError(Exception):
    """Base of every error the engine raises on purpose.

    ``node`` and ``tensor`` name the part at fault when there is one; the
    protocol edge puts them in the status message.
    """

    def __init__(self, message: str, *, node: str | None = None, tensor: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.node = node
        self.tensor = tensor

    def __str__(self) -> str:
        return self.message


class InvalidRequest(EngineError):
    """The request is malformed; retrying it unchanged cannot succeed."""


class TensorError(InvalidRequest):
    """A tensor in the request is wrong (dtype, shape, size, framing, range)."""

    def __init__(self, tensor: str, problem: str) -> None:
        super().__init__(f"tensor '{tensor}': {problem}", tensor=tensor)
        self.problem = problem


class ContractViolation(TensorError):
    """A value broke a ``reject`` data contract: names the tensor, column, row and rule."""

    def __init__(self, tensor: str, column: str, row: int, rule: str, problem: str) -> None:
        super().__init__(tensor, problem)
        self.column = column
        self.row = row
        self.rule = rule


class NotFound(EngineError):
    """Something the request names does not exist."""


class GraphNotFound(NotFound):
    def __init__(self, graph: str, version: str = "") -> None:
        what = f"graph '{graph}'" + (f" version '{version}'" if version else "")
        super().__init__(f"{what} not found")
        self.graph = graph
        self.version = version


class Unavailable(EngineError):
    """Retryable: the thing exists but cannot serve right now."""


class GraphUnavailable(Unavailable):
    pass


class ServerNotReady(Unavailable):
    pass


class DependencyUnavailable(Unavailable):
    pass


class Overloaded(EngineError):
    """Shed by admission control; the client should back off ``retry_after_ms``."""

    def __init__(self, message: str, *, retry_after_ms: int = 100) -> None:
        super().__init__(message)
        self.retry_after_ms = retry_after_ms


class ResourceExhausted(EngineError):
    """A request needs more of a resource (memory) than the server can give it; smaller may work."""


class DeadlineExceeded(EngineError):
    pass


class Unauthenticated(EngineError):
    pass


class PermissionDenied(EngineError):
    pass


class Unimplemented(EngineError):
    pass


class FailedPrecondition(EngineError):
    pass


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One problem found in a graph, located in its source file."""

    file: str
    line: int
    col: int
    message: str
    severity: str = "error"  # "error" | "warning"

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}: {self.severity}: {self.message}"


class GraphInvalid(FailedPrecondition):
    """A graph could not be loaded; ``diagnostics`` lists every problem found."""

    def __init__(self, graph: str, diagnostics: Sequence[Diagnostic]) -> None:
        self.graph = graph
        self.diagnostics = tuple(diagnostics)
        errors = [d for d in self.diagnostics if d.severity == "error"]
        head = "; ".join(str(d) for d in errors[:3])
        more = f" (+{len(errors) - 3} more)" if len(errors) > 3 else ""
        super().__init__(f"graph '{graph}' is invalid: {head}{more}")


class InternalError(EngineError):
    """Our bug. Clients see a generic message and an error id, never this text."""


class ModelContractError(InternalError):
    """A model returned something other than what its signature declares."""


class Status(enum.Enum):
    """The outcome of a call, named as gRPC and Google APIs name their canonical codes.

    The inference core counts, records and traces calls by these names whatever front door
    they came through; each front door translates them into its own codes."""

    OK = "OK"
    CANCELLED = "CANCELLED"
    UNKNOWN = "UNKNOWN"
    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    NOT_FOUND = "NOT_FOUND"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    UNIMPLEMENTED = "UNIMPLEMENTED"
    INTERNAL = "INTERNAL"
    UNAVAILABLE = "UNAVAILABLE"
    UNAUTHENTICATED = "UNAUTHENTICATED"

    # Members are singletons compared by identity, so identity is a sound hash, and a C-level one:
    # Enum's own hashes the member's name in Python, on every lookup of a table keyed by it.
    __hash__ = object.__hash__


STATUS_OF: dict[type[EngineError], Status] = {
    InvalidRequest: Status.INVALID_ARGUMENT,
    NotFound: Status.NOT_FOUND,
    Unavailable: Status.UNAVAILABLE,
    Overloaded: Status.RESOURCE_EXHAUSTED,
    ResourceExhausted: Status.RESOURCE_EXHAUSTED,
    DeadlineExceeded: Status.DEADLINE_EXCEEDED,
    Unauthenticated: Status.UNAUTHENTICATED,
    PermissionDenied: Status.PERMISSION_DENIED,
    Unimplemented: Status.UNIMPLEMENTED,
    FailedPrecondition: Status.FAILED_PRECONDITION,
    InternalError: Status.INTERNAL,
}
"""The one table from the error tree to statuses, looked up along an exception's MRO."""


def new_error_id() -> str:
    """A fresh id (12 hex digits) that ties a caller's message to the server log's full story."""
    return secrets.token_hex(6)


def status_of(exc: BaseException) -> Status:
    """The status a call that raised ``exc`` ends with.

    An ``EngineError`` takes its class's row (its nearest ancestor's); cancellation is
    CANCELLED; any other exception is our bug, INTERNAL."""
    if isinstance(exc, EngineError):
        for cls in type(exc).__mro__:
            status = STATUS_OF.get(cls)
            if status is not None:
                return status
        return Status.INTERNAL  # an EngineError subclass outside every row: treat as our bug
    if isinstance(exc, asyncio.CancelledError) or not isinstance(exc, Exception):
        return Status.CANCELLED
    return Status.INTERNAL
