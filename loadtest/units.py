"""Parsing the quantities an SLA file is written in: durations, latencies, rates and fractions.

Every parser raises ``ValueError`` with a message meant for the person who wrote
the file; :mod:`loadtest.sla` adds the key's path in front of it.
"""

from __future__ import annotations

import re

_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ns|us|µs|ms|s|m|h)?\s*$")
_SCALE_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def seconds(value: object, *, unit_required: bool = False) -> float:
    """``"30s"``, ``"250ms"``, ``"2m"`` or a bare number of seconds → seconds (float)."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like '30s' or '250ms', got {value!r}")
    if isinstance(value, int | float):
        if unit_required:
            raise ValueError(f"give a unit, e.g. '{value}ms' or '{value}s' (a bare {value} is ambiguous)")
        if value < 0:
            raise ValueError(f"a duration cannot be negative, got {value}")
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            number, unit = match.groups()
            if unit is None and unit_required:
                raise ValueError(f"give a unit, e.g. '{number}ms' (a bare number is ambiguous)")
            return float(number) * _SCALE_S[unit or "s"]
    raise ValueError(f"expected a duration like '30s', '250ms' or '2m', got {value!r}")


def fraction(value: object) -> float:
    """``"0.1%"`` → 0.001; a bare number is a fraction (0.001 = 0.1 %)."""
    if isinstance(value, bool):
        raise ValueError(f"expected a fraction like 0.001 or '0.1%', got {value!r}")
    if isinstance(value, str):
        text = value.strip()
        try:
            result = float(text[:-1]) / 100 if text.endswith("%") else float(text)
        except ValueError:
            raise ValueError(f"expected a fraction like 0.001 or '0.1%', got {value!r}") from None
    elif isinstance(value, int | float):
        result = float(value)
    else:
        raise ValueError(f"expected a fraction like 0.001 or '0.1%', got {value!r}")
    if not 0.0 <= result <= 1.0:
        raise ValueError(f"a fraction must lie between 0 and 1 (0% and 100%), got {value!r}")
    return result


def rate(value: object) -> float:
    """Requests per second: a number, or ``"500/s"``, ``"30000/m"``."""
    if isinstance(value, bool):
        raise ValueError(f"expected a rate in requests per second, got {value!r}")
    if isinstance(value, int | float):
        result = float(value)
    elif isinstance(value, str):
        match = re.match(r"^\s*(\d+(?:\.\d*)?)\s*(?:/\s*(s|m))?\s*$", value)
        if not match:
            raise ValueError(f"expected a rate like 500 or '500/s', got {value!r}")
        result = float(match.group(1)) / (60.0 if match.group(2) == "m" else 1.0)
    else:
        raise ValueError(f"expected a rate in requests per second, got {value!r}")
    if result < 0:
        raise ValueError(f"a rate cannot be negative, got {value!r}")
    return result


def percentile_key(key: str) -> float:
    """``"p99.9"`` → 99.9."""
    match = re.match(r"^p(\d{1,2}(?:\.\d+)?|100)$", key)
    if not match:
        raise ValueError(f"unknown percentile {key!r}; write p50, p90, p99, p99.9 …")
    return float(match.group(1))


def format_ms(value_us: float | None) -> str:
    """Microseconds → a short human string in ms (or s above 10 s)."""
    if value_us is None:
        return "-"
    ms = value_us / 1000.0
    if ms >= 10_000:
        return f"{ms / 1000:.1f} s"
    if ms >= 100:
        return f"{ms:.0f} ms"
    if ms >= 10:
        return f"{ms:.1f} ms"
    return f"{ms:.2f} ms"
