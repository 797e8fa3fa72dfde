"""``--log-format json``: every server log line is one JSON object, carrying trace and request ids."""

from __future__ import annotations

import json
import logging
import re
import signal
import socket
from pathlib import Path

from opentelemetry.sdk.trace import TracerProvider

from engine.logging_setup import JsonFormatter
from engine.serving.failure import CURRENT_REQUEST_ID
from tests.integration.test_lifecycle import EngineProcess

SERVING = re.compile(r'"message": "serving \d+ graph\(s\) on ')


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_json_log_line_carries_the_trace_and_the_request() -> None:
    provider = TracerProvider()
    formatter = JsonFormatter()
    record = logging.LogRecord("engine.x", logging.WARNING, __file__, 1, "slow store %s", ("users",), None)
    token = CURRENT_REQUEST_ID.set("req-42")
    try:
        with provider.get_tracer("t").start_as_current_span("call") as span:
            line = json.loads(formatter.format(record))
            context = span.get_span_context()
    finally:
        CURRENT_REQUEST_ID.reset(token)
        provider.shutdown()
    assert (
        line["message"] == "slow store users" and line["level"] == "WARNING" and line["logger"] == "engine.x"
    )
    assert line["trace_id"] == format(context.trace_id, "032x")
    assert line["span_id"] == format(context.span_id, "016x")
    assert line["request_id"] == "req-42"
    plain = json.loads(formatter.format(record))  # outside any call: no ids
    assert "trace_id" not in plain and "request_id" not in plain


def test_the_server_logs_json_lines(example_graphs: Path) -> None:
    engine = EngineProcess(
        str(example_graphs), "--port", str(_port()), "--workers", "1", "--log-format", "json"
    )
    try:
        engine.wait_for(SERVING)
        engine.proc.send_signal(signal.SIGTERM)
        assert engine.proc.wait(30) == 0
    finally:
        engine.stop()
    lines = [line for line in engine.lines if line.strip()]
    assert lines
    for line in lines:
        parsed = json.loads(line)
        assert {"time", "level", "logger", "message", "process"} <= set(parsed), line
