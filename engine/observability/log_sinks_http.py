"""The CloudEvents request-log sink: one HTTP POST per record in binary content mode.

As the KServe and Seldon payload loggers do, the record is the body
(``content-type: application/json``) and the event attributes are headers:
``ce-specversion: 1.0``, ``ce-type: org.graph-engine.request.v1``,
``ce-source`` (configurable), ``ce-id`` (the record id) and ``ce-time`` (the
record time).

Delivery is bounded: a record is tried at most ``max_attempts`` times, with
exponential backoff (``backoff_s`` doubling up to ``backoff_max_s``) after
connection errors, timeouts, 408, 429 and 5xx answers; other answers fail it
at once. After a record has used up its attempts the endpoint counts as down
for ``backoff_max_s``: records in that window fail without being sent, so a
dead or stalled receiver costs at most one record's worth of waiting at a time.
A 429 or 503 with ``Retry-After`` (seconds or an HTTP date) is retried no sooner than it
asks (up to ``RETRY_AFTER_MAX_S``; a longer one marks the endpoint down for that long
instead of holding the sink). Every record goes over one pooled HTTP client (keep-alive
connections), not a new connection per record. It runs on the request log's sink thread,
never on the event loop.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from engine.observability.record_cap import encode_line
from engine.observability.request_log import SinkWriteError

CE_TYPE = "org.graph-engine.request.v1"
RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
RETRY_AFTER_MAX_S = 30.0
"""The longest ``Retry-After`` waited out on the sink thread; a longer one marks the endpoint down."""


class CloudEventsSink:
    """POSTs each record to ``url`` as a binary-mode CloudEvent."""

    def __init__(
        self,
        url: str,
        *,
        source: str = "graph-engine",
        timeout_s: float = 2.0,
        max_attempts: int = 4,
        backoff_s: float = 0.1,
        backoff_max_s: float = 2.0,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"request log: cloudevents url must be http:// or https://, got {url!r}")
        if max_attempts < 1 or timeout_s <= 0 or backoff_s < 0 or backoff_max_s < backoff_s:
            raise ValueError(
                "request log: cloudevents needs max_attempts >= 1, timeout_s > 0, "
                "0 <= backoff_s <= backoff_max_s"
            )
        self.url = url
        self.source = source
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.sent = 0
        self.attempts = 0
        self._down_until = 0.0
        self._client: httpx.Client | None = None  # made on the sink thread, at the first record

    def write(self, records: Sequence[Mapping[str, Any]]) -> None:
        failed = 0
        last = ""
        for record in records:
            error = self._deliver(record)
            if error:
                failed += 1
                last = error
        if failed:
            raise SinkWriteError(
                f"{failed} of {len(records)} records not delivered to {self.url}: {last}", failed
            )

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _deliver(self, record: Mapping[str, Any]) -> str:
        """The empty text when delivered, else why not."""
        if time.monotonic() < self._down_until:
            return "endpoint down after repeated failures"
        try:
            body = encode_line(record)
        except (TypeError, ValueError) as exc:
            return f"not JSON-serialisable: {exc}"
        headers = {
            "content-type": "application/json",
            "ce-specversion": "1.0",
            "ce-type": CE_TYPE,
            "ce-source": self.source,
            "ce-id": str(record.get("id", "")),
            "ce-time": str(record.get("time", "")),
        }
        delay = self.backoff_s
        error = ""
        asked = 0.0  # the receiver's Retry-After, seconds
        for attempt in range(self.max_attempts):
            if attempt:
                time.sleep(max(delay, asked))
                delay = min(delay * 2, self.backoff_max_s)
            self.attempts += 1
            error, retry, asked = self._post(body, headers)
            if not error:
                self.sent += 1
                return ""
            if not retry:
                return error
            if asked > RETRY_AFTER_MAX_S:  # not worth holding the sink: down for as long as asked
                self._down_until = time.monotonic() + asked
                return error
        self._down_until = time.monotonic() + max(self.backoff_max_s, asked)
        return error

    def _post(self, body: bytes, headers: dict[str, str]) -> tuple[str, bool, float]:
        """("", _, _) on 2xx, else (why, whether to retry, the Retry-After it asked for, seconds)."""
        if self._client is None:
            self._client = httpx.Client(timeout=self.timeout_s, limits=httpx.Limits(max_connections=1))
        try:
            answer = self._client.post(self.url, content=body, headers=headers)
        except httpx.HTTPError as exc:  # refused, reset, timed out
            return f"{type(exc).__name__}: {exc}", True, 0.0
        if answer.is_success:
            return "", False, 0.0
        code = answer.status_code
        return f"HTTP {code}", code in RETRY_STATUS, _retry_after(answer.headers.get("retry-after"))


def _retry_after(value: str | None) -> float:
    """Seconds a ``Retry-After`` header asks for (delta-seconds or an HTTP date); 0 without one."""
    if not value:
        return 0.0
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return 0.0
    return max(0.0, when.timestamp() - time.time())
