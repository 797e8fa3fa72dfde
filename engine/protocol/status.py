"""The one table from the engine's error tree to gRPC status codes.

``status_for`` walks an exception's MRO and answers with the first class found
in ``STATUS_TABLE``, so a new subclass of ``Unavailable`` is UNAVAILABLE
without touching this file. The message is the error's own text, prefixed with
the node (and tensor) at fault when the text does not already name them.

Anything that is not an ``EngineError``, and every ``InternalError``, is our
bug: the client gets INTERNAL with ``internal error (id <12 hex>)`` (and the
node's name when the exception carries ``.node``), never the exception's text
or a file path; the full exception, its traceback and the id go to the
``engine.errors`` logger so the id can be found in the server log.

Cancellation is not an error to report: ``status_for`` and ``abort`` re-raise
``asyncio.CancelledError`` and every other ``BaseException`` that is not an
``Exception`` (KeyboardInterrupt, SystemExit) unchanged. Servicers should catch
``Exception``, which never includes them. ``abort`` also re-raises grpc's own
``AbortError`` (the RPC is already being aborted) unchanged.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from typing import Final, NoReturn

import grpc
import grpc.aio
from opentelemetry import trace

from engine.errors import (
    DeadlineExceeded,
    EngineError,
    FailedPrecondition,
    InternalError,
    InvalidRequest,
    NotFound,
    Overloaded,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
    Unimplemented,
)

logger = logging.getLogger("engine.errors")

RETRY_PUSHBACK_KEY: Final = "grpc-retry-pushback-ms"
MAX_MESSAGE_CHARS: Final = 1024
"""Status messages travel in HTTP/2 trailers, which clients cap (8 KiB by default)."""

STATUS_TABLE: Final[dict[type[EngineError], grpc.StatusCode]] = {
    InvalidRequest: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
    Overloaded: grpc.StatusCode.RESOURCE_EXHAUSTED,
    DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    Unimplemented: grpc.StatusCode.UNIMPLEMENTED,
    FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    InternalError: grpc.StatusCode.INTERNAL,
}


@dataclass(frozen=True, slots=True)
class StatusReply:
    """What to answer for one failed RPC."""

    code: grpc.StatusCode
    message: str
    trailing_metadata: tuple[tuple[str, str], ...] = ()
    error_id: str | None = None
    """Set for INTERNAL answers: the id logged with the exception."""


def _code_for(exc: EngineError) -> grpc.StatusCode:
    for cls in type(exc).__mro__:
        code = STATUS_TABLE.get(cls)  # type: ignore[call-overload]
        if code is not None:
            return code
    return grpc.StatusCode.INTERNAL  # an EngineError subclass outside every row: treat as our bug


def code_for(exc: BaseException) -> grpc.StatusCode:
    """The code ``status_for`` would answer, without logging anything (for metrics)."""
    if isinstance(exc, EngineError):
        return _code_for(exc)
    if not isinstance(exc, Exception):
        return grpc.StatusCode.CANCELLED
    if isinstance(exc, grpc.aio.AbortError):
        return grpc.StatusCode.UNKNOWN  # the code was already sent by whoever aborted
    return grpc.StatusCode.INTERNAL


def _trace_id() -> str:
    """The current span's trace id (hex), or "" when nothing is traced."""
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else ""


def _located(exc: EngineError) -> str:
    message = exc.message
    prefix = []
    if exc.node and f"'{exc.node}'" not in message:
        prefix.append(f"node '{exc.node}'")
    if exc.tensor and f"'{exc.tensor}'" not in message:
        prefix.append(f"tensor '{exc.tensor}'")
    return (", ".join(prefix) + ": " + message) if prefix else message


def _clip(message: str) -> str:
    return message if len(message) <= MAX_MESSAGE_CHARS else message[: MAX_MESSAGE_CHARS - 1] + "…"


def _internal(exc: BaseException) -> StatusReply:
    error_id = secrets.token_hex(6)
    node = getattr(exc, "node", None)
    where = f" in node '{_clip(node)}'" if isinstance(node, str) and node else ""
    trace_id = _trace_id()
    logger.error(
        "internal error (id %s)%s%s: %s: %s",
        error_id,
        where,
        f" trace {trace_id}" if trace_id else "",
        type(exc).__qualname__,
        exc,
        exc_info=(type(exc), exc, exc.__traceback__),
        extra={"error_id": error_id, "trace_id": trace_id},
    )
    return StatusReply(grpc.StatusCode.INTERNAL, f"internal error{where} (id {error_id})", (), error_id)


def status_for(exc: BaseException) -> StatusReply:
    """The status code, message and trailers to answer for ``exc`` (see module docstring)."""
    if not isinstance(exc, Exception):
        raise exc
    if not isinstance(exc, EngineError):
        return _internal(exc)
    code = _code_for(exc)
    if code is grpc.StatusCode.INTERNAL:
        return _internal(exc)
    trailers: tuple[tuple[str, str], ...] = ()
    if isinstance(exc, Overloaded):
        trailers = ((RETRY_PUSHBACK_KEY, str(max(0, int(exc.retry_after_ms)))),)
    return StatusReply(code, _clip(_located(exc)), trailers)


async def abort(context: grpc.aio.ServicerContext, exc: BaseException) -> NoReturn:
    """End the RPC with the status ``status_for(exc)`` gives; never returns.

    Call from an ``except Exception as exc:`` block; the AbortError that
    ``context.abort`` raises carries the status to grpc.
    """
    if isinstance(exc, grpc.aio.AbortError):
        raise exc
    reply = status_for(exc)
    await context.abort(reply.code, reply.message, reply.trailing_metadata)
    raise AssertionError("context.abort returned")  # pragma: no cover - grpc always raises
