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
It runs on the request log's sink thread, never on the event loop.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any

from engine.observability.log_sinks import encode_line
from engine.observability.request_log import SinkWriteError

CE_TYPE = "org.graph-engine.request.v1"
RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})


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
        pass

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
        for attempt in range(self.max_attempts):
            if attempt:
                time.sleep(delay)
                delay = min(delay * 2, self.backoff_max_s)
            self.attempts += 1
            error, retry = self._post(body, headers)
            if not error:
                self.sent += 1
                return ""
            if not retry:
                return error
        self._down_until = time.monotonic() + self.backoff_max_s
        return error

    def _post(self, body: bytes, headers: dict[str, str]) -> tuple[str, bool]:
        """("", _) on 2xx, else (why, whether to retry)."""
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as answer:
                answer.read()
                return "", False
        except urllib.error.HTTPError as exc:
            return f"HTTP {exc.code}", exc.code in RETRY_STATUS
        except (urllib.error.URLError, OSError) as exc:  # refused, reset, timed out
            reason = getattr(exc, "reason", exc)
            return f"{type(reason).__name__}: {reason}", True
