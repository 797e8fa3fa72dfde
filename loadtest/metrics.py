"""Server-side assertions: Prometheus ``/metrics`` scraped before and after the measurement.

A selector is a sample name plus a label filter; every sample with that name
whose labels include the filter is summed (so ``{outcome: dropped}`` adds up
all graphs). Bounds compare either the value after the run (``max``, ``min``),
its increase during the run (``max_increase``, ``min_increase``, ``max_rate``
per second), the ratio of two increases (``max_ratio``/``min_ratio`` with an
``over`` denominator, e.g. shadow disagreements over all comparisons), or a
quantile of a histogram's increase (``quantile: 0.99`` with ``max``, computed
like PromQL's ``histogram_quantile`` over ``<metric>_bucket``).
"""

from __future__ import annotations

import math
import urllib.request
from dataclasses import dataclass
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from loadtest.sla import MetricAssertion

Samples = list[tuple[str, dict[str, str], float]]


class MetricsError(Exception):
    """The metrics endpoint could not be read or parsed."""


def scrape(url: str, timeout_s: float = 5.0) -> Samples:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            text = response.read().decode("utf-8", "replace")
    except OSError as exc:
        raise MetricsError(f"cannot read {url}: {exc}") from exc
    try:
        return [
            (s.name, dict(s.labels), float(s.value))
            for family in text_string_to_metric_families(text)
            for s in family.samples
        ]
    except ValueError as exc:
        raise MetricsError(f"{url} is not Prometheus text format: {exc}") from exc


def total(samples: Samples, name: str, labels: dict[str, str]) -> float | None:
    """Sum of the matching samples; None when no sample has this name at all."""
    found = False
    value = 0.0
    for sample_name, sample_labels, sample_value in samples:
        if sample_name != name:
            continue
        found = True
        if all(sample_labels.get(k) == v for k, v in labels.items()):
            value += sample_value
    return value if found else None


@dataclass(frozen=True)
class MetricResult:
    name: str
    ok: bool
    observed: dict[str, Any]
    message: str


def evaluate(assertion: MetricAssertion, before: Samples, after: Samples, duration_s: float) -> MetricResult:
    label = assertion.describe()
    if assertion.quantile is not None:
        return _quantile(assertion, label, before, after)
    name = assertion.metric
    value_after = total(after, name, assertion.labels)
    value_before = total(before, name, assertion.labels)
    if value_after is None and value_before is None:
        # a counter with labels may legitimately not exist until first incremented,
        # but a name the server never exposes is almost always a typo
        if any(n == name or n.startswith(name + "_") for n, _, _ in after):
            value_after = value_before = 0.0
        else:
            return MetricResult(label, False, {}, f"{label}: the server exposes no metric named '{name}'")
    value_after = value_after or 0.0
    increase = value_after - (value_before or 0.0)
    if increase < 0:  # counter reset (server restarted) during the run
        increase = value_after
    observed: dict[str, Any] = {"before": value_before, "after": value_after, "increase": increase}
    measured = {
        "max": value_after,
        "min": value_after,
        "max_increase": increase,
        "min_increase": increase,
        "max_rate": increase / duration_s if duration_s > 0 else 0.0,
    }
    if {"max_ratio", "min_ratio"} & set(assertion.bounds):
        over_name = assertion.over_metric or name
        denominator = (total(after, over_name, assertion.over_labels) or 0.0) - (
            total(before, over_name, assertion.over_labels) or 0.0
        )
        ratio = increase / denominator if denominator > 0 else 0.0
        observed["over_increase"] = denominator
        observed["ratio"] = ratio
        measured["max_ratio"] = measured["min_ratio"] = ratio
    return _judge(label, assertion.bounds, measured, observed)


def _quantile(assertion: MetricAssertion, label: str, before: Samples, after: Samples) -> MetricResult:
    bucket = assertion.metric if assertion.metric.endswith("_bucket") else assertion.metric + "_bucket"
    edges: dict[float, float] = {}
    for sample_name, labels, value in after:
        if sample_name == bucket and all(labels.get(k) == v for k, v in assertion.labels.items()):
            le = float(labels.get("le", "inf"))
            edges[le] = edges.get(le, 0.0) + value
    if not edges:
        return MetricResult(label, False, {}, f"{label}: no histogram buckets named '{bucket}'")
    for sample_name, labels, value in before:
        if sample_name == bucket and all(labels.get(k) == v for k, v in assertion.labels.items()):
            le = float(labels.get("le", "inf"))
            edges[le] = edges.get(le, 0.0) - value
    q = histogram_quantile(assertion.quantile or 0.5, sorted(edges.items()))
    observed = {"quantile": assertion.quantile, "value": q, "count": max(edges.values(), default=0.0)}
    if q is None:
        return MetricResult(label, True, observed, f"{label}: no observations during the run")
    return _judge(label, assertion.bounds, {"max": q, "min": q}, observed)


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """PromQL's histogram_quantile over cumulative (upper bound, count) buckets."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower, lower_count = 0.0, 0.0
    for upper, count in buckets:
        if count >= rank:
            if math.isinf(upper):
                return lower
            if count == lower_count:
                return upper
            return lower + (upper - lower) * (rank - lower_count) / (count - lower_count)
        lower, lower_count = upper, count
    return buckets[-1][0]


def _judge(
    label: str, bounds: dict[str, float], measured: dict[str, float], observed: dict[str, Any]
) -> MetricResult:
    broken: list[str] = []
    for key, bound in bounds.items():
        value = measured[key]
        ok = value <= bound if key.startswith("max") else value >= bound
        if not ok:
            broken.append(
                f"{key.replace('_', ' ')} {value:g} {'>' if key.startswith('max') else '<'} {bound:g}"
            )
    if broken:
        return MetricResult(label, False, observed, f"{label}: {'; '.join(broken)}")
    shown = ", ".join(f"{k.replace('_', ' ')} {measured[k]:g} (bound {v:g})" for k, v in bounds.items())
    return MetricResult(label, True, observed, f"{label}: {shown}")
