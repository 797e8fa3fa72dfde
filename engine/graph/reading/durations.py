"""Durations as graph files write them: ``"20ms"``, ``"1.5s"``, ``"2m"``, ``"1h"``, ``"7d"`` or seconds."""

from __future__ import annotations

import math
import re
from typing import Any

DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d)\s*$")
UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
EXAMPLES = '"20ms", "1.5s", "2m" or a number of seconds'


def seconds(value: Any) -> float | None:
    """``value`` in seconds; None when it is not a finite, non-negative duration (true/false are not)."""
    result: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        result = float(value)
    elif isinstance(value, str) and (m := DURATION.match(value)):
        result = float(m.group(1)) * UNIT_SECONDS[m.group(2)]
    if result is None or not math.isfinite(result) or result < 0:
        return None
    return result
