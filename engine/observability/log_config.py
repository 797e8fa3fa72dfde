"""``request_log:`` settings read into the pipeline: which sink, its options, the queue and the
recorder in front of it. Every mistake is a ValueError naming the key, raised at start-up."""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any

from engine.observability.log_sinks import JsonlSink
from engine.observability.request_log import RequestLog, RequestLogSink

SINKS = ("jsonl", "cloudevents", "parquet")
PIPELINE_KEYS = ("queue_size", "batch_size", "flush_interval_s", "max_record_bytes")
RECORDER_KEYS = ("shadow_wait_s",)
"""Settings of the recorder in front of the pipeline (``recorder_options``)."""
SINK_KEYS: dict[str, tuple[str, ...]] = {
    "jsonl": ("directory", "file_pattern", "rotate_bytes", "rotate_interval_s", "gzip", "fsync"),
    "cloudevents": ("url", "source", "timeout_s", "max_attempts", "backoff_s", "backoff_max_s"),
    "parquet": ("directory", "file_pattern", "compression"),
}


def sink_from_config(config: Mapping[str, Any]) -> RequestLogSink:
    """The sink a ``request_log:`` mapping declares (``sink: jsonl`` by default); ValueError when invalid.

    The pipeline keys (``queue_size``, ``batch_size``, ``flush_interval_s``, ``max_record_bytes``)
    are allowed and ignored here.
    """
    kind = config.get("sink", "jsonl")
    if kind not in SINKS:
        hint = _did_you_mean(str(kind), SINKS)
        raise ValueError(f"request_log: unknown sink {kind!r}{hint} (expected one of {', '.join(SINKS)})")
    allowed = ("sink", *PIPELINE_KEYS, *RECORDER_KEYS, *SINK_KEYS[kind])
    for key in config:
        if key not in allowed:
            raise ValueError(f"request_log: unknown key {key!r} for sink {kind}{_did_you_mean(key, allowed)}")
    options = {k: v for k, v in config.items() if k in SINK_KEYS[kind]}
    try:
        if kind == "jsonl":
            _require(options, "directory", kind)
            _types(
                options,
                {
                    "rotate_bytes": int,
                    "rotate_interval_s": float,
                    "gzip": bool,
                    "file_pattern": str,
                    "fsync": str,
                    "directory": str,
                },
            )
            return JsonlSink(options.pop("directory"), **options)
        if kind == "cloudevents":
            from engine.observability.log_sinks_http import CloudEventsSink

            _require(options, "url", kind)
            _types(
                options,
                {
                    "timeout_s": float,
                    "max_attempts": int,
                    "backoff_s": float,
                    "backoff_max_s": float,
                    "url": str,
                    "source": str,
                },
            )
            return CloudEventsSink(options.pop("url"), **options)
        from engine.observability.log_sinks_parquet import ParquetSink

        _require(options, "directory", kind)
        _types(options, {"directory": str, "file_pattern": str, "compression": str})
        return ParquetSink(options.pop("directory"), **options)
    except OSError as exc:
        raise ValueError(f"request_log: sink {kind}: {exc}") from exc


def request_log_from_config(config: Mapping[str, Any]) -> RequestLog:
    """The whole pipeline (sink + queue settings) a ``request_log:`` mapping declares."""
    sink = sink_from_config(config)
    recorder_options(config)  # checked here too, so every mistake shows at startup
    pipeline = {k: config[k] for k in PIPELINE_KEYS if k in config}
    _types(
        pipeline,
        {"queue_size": int, "batch_size": int, "flush_interval_s": float, "max_record_bytes": int},
    )
    return RequestLog(sink, **pipeline)


def recorder_options(config: Mapping[str, Any]) -> dict[str, float]:
    """The recorder's settings in a ``request_log:`` mapping: ``shadow_wait_s``, the longest a
    record waits for its request's shadows before it is written with those still running
    marked ``unsettled``."""
    options = {k: config[k] for k in RECORDER_KEYS if k in config}
    _types(options, {"shadow_wait_s": float})
    if options.get("shadow_wait_s", 1.0) <= 0:
        raise ValueError(
            f"request_log: 'shadow_wait_s' must be greater than 0, got {options['shadow_wait_s']!r}"
        )
    return options


def _require(options: dict[str, Any], key: str, kind: str) -> None:
    if not options.get(key):
        raise ValueError(f"request_log: sink {kind} needs {key!r}")


def _types(options: dict[str, Any], types: dict[str, type]) -> None:
    for key, kind in types.items():
        if key not in options:
            continue
        value = options[key]
        ok = (
            isinstance(value, kind)
            if kind in (bool, str)
            else (not isinstance(value, bool) and isinstance(value, int if kind is int else (int, float)))
        )
        if not ok:
            raise ValueError(f"request_log: {key!r} must be {_KIND_NAMES[kind]}, got {value!r}")


_KIND_NAMES = {bool: "true or false", str: "text", int: "a whole number", float: "a number"}


def _did_you_mean(word: str, options: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""
