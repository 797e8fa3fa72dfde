"""HDR latency histograms: one shape everywhere, so they merge exactly across processes.

Values are microseconds, from 1 µs to 10 minutes, at 3 significant digits
(every recorded value is kept to within 0.1 %). Generator processes send their
histograms to the parent in HdrHistogram's compressed encoding; adding them is
exact: the merged histogram is bucket-for-bucket the one a single process
would have built from the same values.
"""

from __future__ import annotations

from collections.abc import Iterable

from hdrh.histogram import HdrHistogram

LOWEST_US = 1
HIGHEST_US = 600_000_000  # 10 minutes
DIGITS = 3
REPORTED = (50.0, 90.0, 99.0, 99.9)


def new() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, DIGITS)


def record(histogram: HdrHistogram, value_us: int) -> None:
    histogram.record_value(min(max(value_us, LOWEST_US), HIGHEST_US))


def encode(histogram: HdrHistogram) -> bytes:
    encoded: bytes = histogram.encode()  # base64 text of the compressed V2 encoding
    return encoded


def decode(encoded: bytes | str) -> HdrHistogram:
    return HdrHistogram.decode(encoded)


def add(target: HdrHistogram, other: HdrHistogram | bytes | str) -> None:
    """Add ``other`` (a histogram or its encoding) into ``target``.

    Empty histograms are skipped: hdrhistogram's ``add`` of an empty histogram
    resets the tracked minimum to 0.
    """
    if isinstance(other, bytes | str):
        other = decode(other)
    if other.get_total_count():
        target.add(other)


def merge(histograms: Iterable[HdrHistogram | bytes | str]) -> HdrHistogram:
    merged = new()
    for h in histograms:
        add(merged, h)
    return merged


def percentile(histogram: HdrHistogram, q: float) -> float | None:
    """The value at percentile ``q`` (0-100) in µs, or None for an empty histogram."""
    if histogram.get_total_count() == 0:
        return None
    return float(histogram.get_value_at_percentile(q))


def summary(histogram: HdrHistogram, extra: Iterable[float] = ()) -> dict[str, float | int | None]:
    """Count, min, mean, max and percentiles (µs) as a JSON-ready dict."""
    count = histogram.get_total_count()
    out: dict[str, float | int | None] = {"count": count}
    out["min_us"] = float(histogram.get_min_value()) if count else None
    out["mean_us"] = round(histogram.get_mean_value(), 1) if count else None
    for q in sorted({*REPORTED, *extra}):
        out[f"p{q:g}_us"] = percentile(histogram, q)
    out["max_us"] = float(histogram.get_max_value()) if count else None
    return out


def spectrum(histogram: HdrHistogram) -> list[tuple[float, float]]:
    """(percentile, value µs) pairs for a percentile-distribution plot, ticks halving towards 100."""
    if histogram.get_total_count() == 0:
        return []
    points: list[tuple[float, float]] = []
    for item in histogram.get_percentile_iterator(5):
        points.append((float(item.percentile_level_iterated_to), float(item.value_iterated_to)))
    return points


def buckets(histogram: HdrHistogram) -> list[tuple[int, int]]:
    """(value µs, count) for every non-empty bucket: the exact content, for comparisons."""
    return [
        (int(i.value_iterated_to), int(i.count_at_value_iterated_to))
        for i in histogram.get_recorded_iterator()
    ]
