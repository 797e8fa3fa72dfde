"""What a caller is told about a failed call, whatever front door it came through.

``describe`` turns an exception into a ``Failure``: its ``Status`` (``engine.errors.status_of``),
a message safe to send, and a back-off for shed calls. The message is the error's own text,
prefixed with the node (and tensor) at fault when the text does not already name them, and
clipped (status messages travel in HTTP/2 trailers, which clients cap at 8 KiB).

Anything that is not an ``EngineError``, and every ``InternalError``, is our bug: the caller
gets ``internal error (id <12 hex>)`` (with the node's name when the exception carries one),
never the exception's text, an address or a path; the full exception, its traceback, the id
and the trace id go to the ``engine.errors`` logger so the id can be found in the server log.

Cancellation is not an error to report: ``describe`` re-raises ``asyncio.CancelledError`` and
every ``BaseException`` that is not an ``Exception`` (KeyboardInterrupt, SystemExit).
"""

from __future__ import annotations

import contextvars
import logging
from dataclasses import dataclass
from typing import Final

from opentelemetry import trace

from engine.errors import EngineError, Overloaded, Status, new_error_id, status_of

logger = logging.getLogger("engine.errors")

MAX_MESSAGE_CHARS: Final = 1024


@dataclass(frozen=True, slots=True)
class Failure:
    """One failed call as its caller sees it."""

    status: Status
    message: str
    retry_after_ms: int | None = None
    """Set for shed calls (RESOURCE_EXHAUSTED): how long the caller should back off."""
    error_id: str | None = None
    """Set for INTERNAL answers: the id logged with the exception."""


def describe(exc: BaseException) -> Failure:
    """The status, safe message and back-off to answer for ``exc`` (see the module docstring)."""
    if not isinstance(exc, Exception):
        raise exc
    status = status_of(exc)
    if status is Status.INTERNAL or not isinstance(exc, EngineError):
        return internal(exc)
    retry = max(0, int(exc.retry_after_ms)) if isinstance(exc, Overloaded) else None
    return Failure(status, clip(located(exc)), retry)


def internal(exc: BaseException) -> Failure:
    """Log ``exc`` under a fresh error id; the caller gets the id and the node, nothing else."""
    error_id = new_error_id()
    node = getattr(exc, "node", None)
    where = f" in node '{clip(node)}'" if isinstance(node, str) and node else ""
    trace_id = current_trace_id()
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
    return Failure(Status.INTERNAL, f"internal error{where} (id {error_id})", None, error_id)


def located(exc: EngineError) -> str:
    """The error's message, prefixed with the node and tensor at fault unless it names them."""
    message = exc.message
    prefix = []
    if exc.node and f"'{exc.node}'" not in message:
        prefix.append(f"node '{exc.node}'")
    if exc.tensor and f"'{exc.tensor}'" not in message:
        prefix.append(f"tensor '{exc.tensor}'")
    return (", ".join(prefix) + ": " + message) if prefix else message


def clip(message: str) -> str:
    return message if len(message) <= MAX_MESSAGE_CHARS else message[: MAX_MESSAGE_CHARS - 1] + "…"


CURRENT_REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("engine_request_id", default="")
"""The id of the request being served on this task (set by the core), for log lines."""


def current_trace_id() -> str:
    """The current span's trace id (32 hex digits), or "" when nothing is traced."""
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else ""
