"""A fixed log-bucket histogram: bounded memory, vectorised inserts, quantiles within 0.5%.

Magnitudes from ``low`` to ``high`` fall into buckets that each grow by ``GROWTH``
(1%); bucket *k* holds ``[low * g**k, low * g**(k+1))`` and reports its geometric
middle ``low * g**(k+0.5)``, so a quantile is within ``sqrt(g) - 1`` (< 0.5%) of the
value it estimates. Magnitudes below ``low`` share one bucket around zero (reported
as 0, so within ``low`` absolute); magnitudes above ``high`` share the last bucket.
Every reported quantile is clamped to the exact minimum and maximum seen, the top
rank is the exact maximum, and every quantile of a set of equal values is exact.

``signed=True`` mirrors the buckets for negative values (latency differences).
The quantile is the nearest-rank one: the smallest value with at least ``q * n`` of
the values at or below it (the value at 1-based rank ``ceil(q * n)``).

The sum behind the mean is kept exactly, as an integer count of 2**-1074 (the smallest
double, of which every finite double is a whole multiple): each ``add_one`` adds its value
and each ``add`` its array's float sum, without rounding. The mean is that sum divided by
the count, correctly rounded, so it does not depend on the order the calls came in.

``state()`` is the histogram as JSON-able plain data (only the buckets in use, as sparse
indexes and counts; the exact sum as floats whose exact sum it is) and ``absorb_state``
adds such a state to this histogram. Counts, sum, minimum and maximum all add exactly, so
a histogram that absorbed the states of several others reports exactly what one histogram
given every one of their calls would report.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from typing import Any

import numpy as np

GROWTH = 1.01
RELATIVE_ERROR = math.sqrt(GROWTH) - 1  # the documented bound on a quantile, relative
_LOG_GROWTH = math.log(GROWTH)
_UNIT_BITS = 1074  # the exact sum counts units of 2**-_UNIT_BITS
_ONE = 1 << _UNIT_BITS


def _units(value: float) -> int:
    """``value`` exactly, in units of 2**-1074."""
    if type(value) is int:
        return value << _UNIT_BITS
    numerator, denominator = float(value).as_integer_ratio()  # denominator: a power of two
    return numerator << (_UNIT_BITS + 1 - denominator.bit_length())


def _as_float(units: int) -> float:
    """``units`` (of 2**-1074) as the nearest float; ±max when beyond the float range."""
    try:
        return units / _ONE  # int / int: correctly rounded
    except OverflowError:
        return math.copysign(sys.float_info.max, units)


def _number(value: object) -> float:
    """A number read from a state, kept as it was (an int stays an int, as ``add_one`` kept it)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"expected a finite number, got {value!r}")
    return value


def _expansion(units: int) -> list[float]:
    """Floats, largest first, whose exact sum is ``units`` (usually one or two; [] for zero)."""
    parts: list[float] = []
    while units:
        part = _as_float(units)
        parts.append(part)
        units -= _units(part)
    return parts


class LogHistogram:
    """Counts of values in fixed log buckets, plus the exact count, sum, min and max."""

    __slots__ = ("_counts", "_log_low", "_n", "_sum", "high", "low", "max", "min", "n", "signed")

    def __init__(self, low: float = 1e-9, high: float = 1e9, signed: bool = False) -> None:
        self.low = low
        self.high = high
        self.signed = signed
        self._n = math.ceil(math.log(high / low) / math.log(GROWTH))  # buckets per sign
        self._log_low = math.log(low)
        # layout: [negative buckets, largest magnitude first] [zero] [positive buckets]
        self._counts = np.zeros(2 * self._n + 1 if signed else self._n + 1, dtype=np.int64)
        self.n = 0
        self._sum = 0  # exact, in units of 2**-1074
        self.min = math.inf
        self.max = -math.inf

    def add(self, values: np.ndarray) -> None:
        """Count finite ``values`` (any shape); non-finite ones must be filtered out by the caller."""
        v = np.asarray(values, dtype=np.float64).reshape(-1)
        if v.size <= 8:  # a few values: the scalar path is cheaper than numpy's per-call overhead
            for value in v.tolist():
                self.add_one(value)
            return
        self.n += int(v.size)
        self._sum += _units(float(v.sum()))
        self.min = min(self.min, float(v.min()))
        self.max = max(self.max, float(v.max()))
        np.add.at(self._counts, self._index(v), 1)

    def add_one(self, value: float) -> None:
        """Count one finite value (the cheap path for one latency per request)."""
        self.n += 1
        self._sum += _units(value)
        self.min = min(self.min, value)
        self.max = max(self.max, value)
        mag = abs(value)
        if mag < self.low:
            index = self._n if self.signed else 0
        else:
            k = max(0, min(math.floor((math.log(mag) - self._log_low) / _LOG_GROWTH), self._n - 1))
            index = self._n + 1 + k if value > 0 else self._n - 1 - k
            if not self.signed:
                index = k + 1
        self._counts[index] += 1

    @property
    def total(self) -> float:
        """The sum of the values counted, rounded to a float (±max beyond the float range)."""
        return _as_float(self._sum)

    def mean(self) -> float | None:
        """The exact sum over the count, correctly rounded; None when empty."""
        return self._sum / (self.n << _UNIT_BITS) if self.n else None

    def quantile(self, q: float) -> float | None:
        """The nearest-rank ``q`` quantile (0 < q <= 1) within the documented bound; None when empty."""
        if not self.n:
            return None
        rank = max(1, math.ceil(q * self.n - 1e-9))
        if rank >= self.n:
            return self.max
        index = int(np.searchsorted(np.cumsum(self._counts), rank))
        return min(max(self._middle(index), self.min), self.max)

    def counts_at_or_below(self, bounds: list[float]) -> list[int]:
        """How many values lie at or below each bound (ascending), for a Prometheus histogram's
        cumulative buckets: a log bucket counts below a bound when its middle is (so within 0.5%)."""
        if not self.n:
            return [0] * len(bounds)
        middles = np.array([self._middle(i) for i in range(self._counts.size)])
        order = np.argsort(middles, kind="stable")
        cumulative = np.cumsum(self._counts[order])
        positions = np.searchsorted(middles[order], np.asarray(bounds, dtype=np.float64), side="right")
        return [int(cumulative[p - 1]) if p > 0 else 0 for p in positions.tolist()]

    def state(self) -> dict[str, Any]:
        """JSON-able plain data: the bucket layout, count, exact sum, min, max and the buckets in use."""
        used = np.flatnonzero(self._counts)
        return {
            "low": self.low,
            "high": self.high,
            "signed": self.signed,
            "n": self.n,
            "sum": _expansion(self._sum),
            "min": self.min if self.n else None,
            "max": self.max if self.n else None,
            "index": used.tolist(),
            "count": self._counts[used].tolist(),
        }

    @classmethod
    def from_state(cls, data: Mapping[str, Any]) -> LogHistogram:
        """The histogram ``state()`` described."""
        histogram = cls(float(data["low"]), float(data["high"]), bool(data["signed"]))
        histogram.absorb_state(data)
        return histogram

    def absorb_state(self, data: Mapping[str, Any]) -> None:
        """Add the values another histogram's ``state()`` describes; ValueError for another layout."""
        layout = (float(data["low"]), float(data["high"]), bool(data["signed"]))
        if layout != (self.low, self.high, self.signed):
            raise ValueError(f"histogram layout {layout} differs from {(self.low, self.high, self.signed)}")
        index = np.asarray(data["index"], dtype=np.int64)
        count = np.asarray(data["count"], dtype=np.int64)
        if (
            index.shape != count.shape
            or index.ndim != 1
            or not ((index >= 0) & (index < self._counts.size)).all()
        ):
            raise ValueError("histogram buckets outside the layout")
        n = int(data["n"])
        if n != int(count.sum()):
            raise ValueError(f"histogram count {n} differs from its buckets' {int(count.sum())}")
        if not n:
            return
        np.add.at(self._counts, index, count)
        self.n += n
        self._sum += sum(_units(_number(part)) for part in data["sum"])
        self.min = min(self.min, _number(data["min"]))
        self.max = max(self.max, _number(data["max"]))

    def _index(self, v: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore"):  # log(0) = -inf lands below bucket 0, like any value under low
            k = np.floor((np.log(np.abs(v)) - self._log_low) / _LOG_GROWTH)
        shift = np.clip(k, -1, self._n - 1).astype(np.int64) + 1  # 0 = the bucket around zero
        if not self.signed:
            return np.asarray(shift)
        return np.asarray(self._n + np.sign(v).astype(np.int64) * shift)

    def _middle(self, index: int) -> float:
        center = self._n if self.signed else 0
        if index == center:
            return 0.0
        k = abs(index - center) - 1
        value = math.exp(self._log_low + (k + 0.5) * math.log(GROWTH))
        return value if index > center else -value
