"""The online aggregator: one ``ShadowComparison`` per (graph, shadow), one comparator per output.

``observe`` folds one request's live and shadow outputs and durations in (vectorised
over rows; a few numpy calls per output) and returns each output's
``Verdict``. ``count`` records an outcome that has nothing to compare (error,
timeout, shed, …). Both run on the event loop only: no locks. ``snapshot`` and
``ShadowComparisons.report`` turn the running numbers into a ``ShadowReport``.
``state`` / ``absorb`` carry the running numbers between workers as plain data
(``engine.shadow.merge``).

Which outputs are compared: those ``compare:`` names; when it names none, every
output both sides return, with ``rules.default_rule`` for its dtype.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.shadow.histogram import LogHistogram
from engine.shadow.outputs import Comparator, Incomparable, comparator, spread
from engine.shadow.report import (
    LATENCY_BOUNDS_S,
    Latency,
    LatencyBuckets,
    ShadowCounters,
    ShadowReport,
    ShadowSummary,
)
from engine.shadow.rules import CompareRule, default_rule

# Outcome of one sampled request, as counted and as written in the request record.
# ``unsettled`` exists only in records: the record was written before the shadow settled
# (``request_log.shadow_wait_s``); the live counters count that shadow's real outcome later.
OK, ERROR, TIMEOUT, CANCELLED, SHED, SKIPPED, NO_LIVE, UNSETTLED = (
    "ok", "error", "timeout", "cancelled", "shed", "skipped", "no_live", "unsettled",
)  # fmt: skip
_COUNTER = {
    OK: "run", ERROR: "errors", TIMEOUT: "timeouts", CANCELLED: "cancelled",
    SHED: "shed", SKIPPED: "skipped", NO_LIVE: "no_live", UNSETTLED: "unsettled",
}  # fmt: skip
STATUSES = tuple(_COUNTER)


@dataclass(frozen=True, slots=True)
class ShadowConfig:
    """One shadow as compiled from the graph: what it mirrors, how it is compared, sampled and bounded.

    ``target``: the live node it mirrors ("" = the whole graph); ``sample``: fraction of requests;
    ``timeout_s``: bound on one shadow run.
    """

    graph: str
    shadow: str
    target: str = ""
    rules: Mapping[str, CompareRule] = field(default_factory=dict)
    sample: float = 1.0
    timeout_s: float = 1.0


@dataclass(frozen=True, slots=True)
class Verdict:
    """One output of one request: rows compared and rows that agree."""

    rows: int
    agree: int

    @property
    def disagrees(self) -> bool:
        return self.agree < self.rows


class _Output:
    __slots__ = ("comparator", "mismatched", "missing")

    def __init__(self, rule: CompareRule) -> None:
        self.comparator: Comparator = comparator(rule)
        self.missing = 0
        self.mismatched = 0


class ShadowComparison:
    """The running statistics of one (graph, shadow)."""

    def __init__(self, config: ShadowConfig) -> None:
        self.config = config
        self._outputs = {name: _Output(rule) for name, rule in config.rules.items()}
        self._counts = dict.fromkeys(STATUSES, 0)
        self._live_us = LogHistogram(low=1.0, high=1e10)
        self._shadow_us = LogHistogram(low=1.0, high=1e10)
        self._diff_us = LogHistogram(low=1.0, high=1e10, signed=True)
        self.last_error = ""
        self.failing = 0  # errors and timeouts in a row (the pool backs off a failing candidate)

    def observe(
        self,
        live_outputs: Mapping[str, np.ndarray],
        shadow_outputs: Mapping[str, np.ndarray],
        live_ns: int,
        shadow_ns: int,
    ) -> dict[str, Verdict]:
        """Compare one request's outputs (counts it as ``run``); durations are kept to the µs."""
        self._counts[OK] += 1
        self.failing = 0
        live_us, shadow_us = live_ns // 1000, shadow_ns // 1000
        self._live_us.add_one(live_us)
        self._shadow_us.add_one(shadow_us)
        self._diff_us.add_one(shadow_us - live_us)
        if not self.config.rules:
            for name in live_outputs.keys() & shadow_outputs.keys() - self._outputs.keys():
                self._outputs[name] = _Output(default_rule(np.asarray(live_outputs[name]).dtype))
        verdicts: dict[str, Verdict] = {}
        for name, out in self._outputs.items():
            live, shadow = live_outputs.get(name), shadow_outputs.get(name)
            if live is None or shadow is None:
                out.missing += 1
                continue
            try:
                verdicts[name] = Verdict(*out.comparator.observe(live, shadow))
            except Incomparable as exc:
                out.mismatched += 1
                self.last_error = f"output {name}: {exc}"
        return verdicts

    def count(self, status: str, error: str = "") -> None:
        """Count an outcome without outputs to compare: error, timeout, cancelled, shed, skipped,
        no_live (and, rebuilding from a log, unsettled)."""
        self._counts[status] += 1
        if status in (ERROR, TIMEOUT):
            self.failing += 1
        if error:
            self.last_error = error

    @property
    def compared(self) -> bool:
        """Whether any request's outputs were compared yet."""
        return self._counts[OK] > 0

    def adopt_counts(self, other: ShadowComparison) -> None:
        """Take over another comparison's counts (it compared nothing, so nothing else is lost)."""
        for status, n in other._counts.items():
            self._counts[status] += n
        self.last_error = self.last_error or other.last_error

    def state(self) -> dict[str, Any]:
        """This comparison's running numbers as JSON-able plain data (``absorb`` reads it)."""
        return {
            "graph": self.config.graph,
            "shadow": self.config.shadow,
            "target": self.config.target,
            "counts": dict(self._counts),
            "latency": [h.state() for h in (self._live_us, self._shadow_us, self._diff_us)],
            "outputs": {
                name: {
                    "rule": out.comparator.rule.to_json(),
                    "missing": out.missing,
                    "mismatched": out.mismatched,
                    "numbers": out.comparator.state(),
                }
                for name, out in self._outputs.items()
            },
            "last_error": self.last_error,
        }

    def absorb(self, state: Mapping[str, Any]) -> None:
        """Add the numbers of another comparison of the same (graph, shadow); ValueError when
        an output is compared by another rule there."""
        for status, n in state["counts"].items():
            self._counts[status] += int(n)
        for histogram, part in zip(
            (self._live_us, self._shadow_us, self._diff_us), state["latency"], strict=True
        ):
            histogram.absorb_state(part)
        for name, data in state["outputs"].items():
            rule = CompareRule.from_json(data["rule"])
            out = self._outputs.get(name)
            if out is None:
                out = self._outputs[name] = _Output(rule)
            elif out.comparator.rule != rule:
                raise ValueError(f"output {name} is compared by another rule on another worker")
            out.missing += int(data["missing"])
            out.mismatched += int(data["mismatched"])
            out.comparator.absorb(data["numbers"])
        self.last_error = self.last_error or str(state["last_error"])

    def counters(self) -> ShadowCounters:
        c = {_COUNTER[s]: n for s, n in self._counts.items()}
        return ShadowCounters(sampled=sum(n for s, n in self._counts.items() if s != SKIPPED), **c)

    def snapshot(self) -> ShadowSummary:
        return ShadowSummary(
            target=self.config.target,
            counters=self.counters(),
            latency=Latency(
                live=spread(self._live_us),
                shadow=spread(self._shadow_us),
                diff=spread(self._diff_us),
                live_buckets=_buckets(self._live_us),
                shadow_buckets=_buckets(self._shadow_us),
            ),
            outputs={
                n: o.comparator.report(o.missing, o.mismatched) for n, o in sorted(self._outputs.items())
            },
            last_error=self.last_error,
        )


def _buckets(histogram_us: LogHistogram) -> LatencyBuckets:
    bounds_us = [b * 1e6 for b in LATENCY_BOUNDS_S]
    return LatencyBuckets(
        histogram_us.counts_at_or_below(bounds_us), histogram_us.n, histogram_us.total / 1e6
    )


class ShadowComparisons:
    """Every live comparison, by (graph, shadow): what the report RPC and metrics read."""

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, str], ShadowComparison] = {}

    def add(self, config: ShadowConfig) -> ShadowComparison:
        """The comparison for ``config``; a new one (fresh numbers) when its rules or target changed.

        A replaced comparison that never compared outputs hands its counts to the new one."""
        key = (config.graph, config.shadow)
        current = self._by_key.get(key)
        if current is None or (current.config.rules, current.config.target) != (config.rules, config.target):
            fresh = self._by_key[key] = ShadowComparison(config)
            if current is not None and not current.compared:  # outcomes without outputs carry over
                fresh.adopt_counts(current)
            current = fresh
        current.config = config  # sampling and timeout changes apply without losing the numbers
        return current

    def get(self, graph: str, shadow: str) -> ShadowComparison | None:
        return self._by_key.get((graph, shadow))

    def discard(self, graph: str, shadow: str) -> None:
        """Forget one comparison (its next ``add`` starts with fresh numbers)."""
        self._by_key.pop((graph, shadow), None)

    def remove_graph(self, graph: str) -> None:
        for key in [k for k in self._by_key if k[0] == graph]:
            del self._by_key[key]

    def state(self, graph: str | None = None) -> list[dict[str, Any]]:
        """Every comparison's ``state()`` (of one graph, or all): what a worker ships to be merged."""
        return [c.state() for (g, _), c in sorted(self._by_key.items()) if graph is None or g == graph]

    def report(self, graph: str | None = None) -> ShadowReport:
        graphs: dict[str, dict[str, ShadowSummary]] = {}
        for (g, s), comparison in sorted(self._by_key.items()):
            if graph is None or g == graph:
                graphs.setdefault(g, {})[s] = comparison.snapshot()
        return ShadowReport(graphs)
