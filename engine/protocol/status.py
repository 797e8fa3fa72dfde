"""The gRPC front door's one table: engine ``Status`` -> gRPC status code.

What a caller is told is decided once for every door by ``engine.serving.failure.describe``
(status, a safe message, a back-off); this module only translates it into gRPC terms: the
status code from ``GRPC_CODES`` and, for shed calls, the ``grpc-retry-pushback-ms`` trailer
(gRPC's retry pushback: the client backs off that many milliseconds).

``abort`` re-raises grpc's own ``AbortError`` (the RPC is already being aborted) and every
``BaseException`` that is not an ``Exception`` (cancellation) unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, NoReturn

import grpc
import grpc.aio

from engine.errors import Status, status_of
from engine.serving.failure import describe

RETRY_PUSHBACK_KEY: Final = "grpc-retry-pushback-ms"

GRPC_CODES: Final[dict[Status, grpc.StatusCode]] = {
    Status.OK: grpc.StatusCode.OK,
    Status.CANCELLED: grpc.StatusCode.CANCELLED,
    Status.UNKNOWN: grpc.StatusCode.UNKNOWN,
    Status.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
    Status.DEADLINE_EXCEEDED: grpc.StatusCode.DEADLINE_EXCEEDED,
    Status.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    Status.PERMISSION_DENIED: grpc.StatusCode.PERMISSION_DENIED,
    Status.RESOURCE_EXHAUSTED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Status.FAILED_PRECONDITION: grpc.StatusCode.FAILED_PRECONDITION,
    Status.UNIMPLEMENTED: grpc.StatusCode.UNIMPLEMENTED,
    Status.INTERNAL: grpc.StatusCode.INTERNAL,
    Status.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    Status.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
}


@dataclass(frozen=True, slots=True)
class StatusReply:
    """What to answer for one failed RPC."""

    code: grpc.StatusCode
    message: str
    trailing_metadata: tuple[tuple[str, str], ...] = ()
    error_id: str | None = None
    """Set for INTERNAL answers: the id logged with the exception."""


def code_for(exc: BaseException) -> grpc.StatusCode:
    """The code ``status_for`` would answer, without logging anything."""
    if isinstance(exc, grpc.aio.AbortError):
        return grpc.StatusCode.UNKNOWN  # the code was already sent by whoever aborted
    return GRPC_CODES[status_of(exc)]


def status_for(exc: BaseException) -> StatusReply:
    """The status code, message and trailers to answer for ``exc``."""
    failure = describe(exc)
    trailers: tuple[tuple[str, str], ...] = ()
    if failure.retry_after_ms is not None:
        trailers = ((RETRY_PUSHBACK_KEY, str(failure.retry_after_ms)),)
    return StatusReply(GRPC_CODES[failure.status], failure.message, trailers, failure.error_id)


async def abort(context: grpc.aio.ServicerContext[Any, Any], exc: BaseException) -> NoReturn:
    """End the RPC with the status ``status_for(exc)`` gives; never returns.

    Call from an ``except Exception as exc:`` block; the AbortError that
    ``context.abort`` raises carries the status to grpc.
    """
    if isinstance(exc, grpc.aio.AbortError):
        raise exc
    reply = status_for(exc)
    await context.abort(reply.code, reply.message, reply.trailing_metadata)
    raise AssertionError("context.abort returned")  # pragma: no cover - grpc always raises
