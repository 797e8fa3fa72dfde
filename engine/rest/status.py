"""The REST front door's one table: engine ``Status`` -> HTTP status code, and the error body.

What a caller is told is decided once for every door by ``engine.serving.failure.describe``;
this module only puts it in HTTP terms: the code from ``HTTP_CODES``, the V2 error body
``{"error": "<message>"}`` (plus ``"error_id"`` for internal errors, the id the server log
has the exception under), ``Retry-After`` for shed calls (whole seconds, rounded up, as
RFC 9110 defines it, and ``Retry-After-Ms`` with the exact back-off) and
``WWW-Authenticate: Bearer`` for missing or invalid credentials (RFC 6750).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Final

from engine.errors import Status
from engine.serving.failure import describe

HTTP_CODES: Final[dict[Status, int]] = {
    Status.OK: 200,
    Status.CANCELLED: 499,  # client closed the request (nginx's, as grpc-gateway uses it)
    Status.UNKNOWN: 500,
    Status.INVALID_ARGUMENT: 400,
    Status.DEADLINE_EXCEEDED: 504,
    Status.NOT_FOUND: 404,
    Status.PERMISSION_DENIED: 403,
    Status.RESOURCE_EXHAUSTED: 429,
    Status.FAILED_PRECONDITION: 400,  # e.g. loading a graph that does not check: fix it, then retry
    Status.UNIMPLEMENTED: 501,
    Status.INTERNAL: 500,
    Status.UNAVAILABLE: 503,
    Status.UNAUTHENTICATED: 401,
}


@dataclass(frozen=True, slots=True)
class ErrorReply:
    code: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


def error_reply(exc: BaseException) -> ErrorReply:
    """What to answer for ``exc``; re-raises cancellation (``describe`` does)."""
    failure = describe(exc)
    body: dict[str, str] = {"error": failure.message}
    if failure.error_id is not None:
        body["error_id"] = failure.error_id
    headers: list[tuple[str, str]] = []
    if failure.retry_after_ms is not None:
        headers.append(("Retry-After", str(max(1, -(-failure.retry_after_ms // 1000)))))
        headers.append(("Retry-After-Ms", str(failure.retry_after_ms)))
    if failure.status is Status.UNAUTHENTICATED:
        headers.append(("WWW-Authenticate", 'Bearer realm="graph-engine"'))
    return ErrorReply(HTTP_CODES[failure.status], json.dumps(body).encode(), tuple(headers))
