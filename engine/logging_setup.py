"""The server's log lines: text (the default) or JSON, one object per line.

JSON lines carry what a log pipeline joins on: ``time`` (RFC 3339, UTC), ``level``, ``logger``,
``message``, ``process``, the current span's ``trace_id`` and ``span_id`` (when traced), the
``request_id`` of the call being served, an ``error_id`` (internal errors) and ``exception``
(the traceback) when there is one.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

from opentelemetry import trace

from engine.serving.failure import CURRENT_REQUEST_ID

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
        }
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            line["trace_id"] = format(context.trace_id, "032x")
            line["span_id"] = format(context.span_id, "016x")
        elif getattr(record, "trace_id", ""):  # an internal error logged with its trace
            line["trace_id"] = getattr(record, "trace_id", "")
        request_id = CURRENT_REQUEST_ID.get()
        if request_id:
            line["request_id"] = request_id
        error_id = getattr(record, "error_id", None)
        if error_id:
            line["error_id"] = error_id
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def setup_logging(level: str, fmt: str = "text") -> None:
    """The root logger's one handler, in ``fmt`` (``text`` or ``json``)."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
