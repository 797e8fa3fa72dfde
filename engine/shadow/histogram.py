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
"""

from __future__ import annotations

import math

import numpy as np

GROWTH = 1.01
RELATIVE_ERROR = math.sqrt(GROWTH) - 1  # the documented bound on a quantile, relative
_LOG_GROWTH = math.log(GROWTH)


class LogHistogram:
    """Counts of values in fixed log buckets, plus the exact count, sum, min and max."""

    __slots__ = ("_counts", "_log_low", "_n", "high", "low", "max", "min", "n", "signed", "total")

    def __init__(self, low: float = 1e-9, high: float = 1e9, signed: bool = False) -> None:
        self.low = low
        self.high = high
        self.signed = signed
        self._n = math.ceil(math.log(high / low) / math.log(GROWTH))  # buckets per sign
        self._log_low = math.log(low)
        # layout: [negative buckets, largest magnitude first] [zero] [positive buckets]
        self._counts = np.zeros(2 * self._n + 1 if signed else self._n + 1, dtype=np.int64)
        self.n = 0
        self.total = 0.0
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
        self.total += float(v.sum())
        self.min = min(self.min, float(v.min()))
        self.max = max(self.max, float(v.max()))
        np.add.at(self._counts, self._index(v), 1)

    def add_one(self, value: float) -> None:
        """Count one finite value (the cheap path for one latency per request)."""
        self.n += 1
        self.total += value
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

    def mean(self) -> float | None:
        return self.total / self.n if self.n else None

    def quantile(self, q: float) -> float | None:
        """The nearest-rank ``q`` quantile (0 < q <= 1) within the documented bound; None when empty."""
        if not self.n:
            return None
        rank = max(1, math.ceil(q * self.n - 1e-9))
        if rank >= self.n:
            return self.max
        index = int(np.searchsorted(np.cumsum(self._counts), rank))
        return min(max(self._middle(index), self.min), self.max)

    def _index(self, v: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore"):  # log(0) = -inf lands below bucket 0, like any value under low
            k = np.floor((np.log(np.abs(v)) - self._log_low) / _LOG_GROWTH)
        shift = np.clip(k, -1, self._n - 1).astype(np.int64) + 1  # 0 = the bucket around zero
        if not self.signed:
            return shift
        return self._n + np.sign(v).astype(np.int64) * shift

    def _middle(self, index: int) -> float:
        center = self._n if self.signed else 0
        if index == center:
            return 0.0
        k = abs(index - center) - 1
        value = math.exp(self._log_low + (k + 0.5) * math.log(GROWTH))
        return value if index > center else -value
