"""One shadow report from several processes' comparison states (``--workers N``).

Each worker ships ``ShadowComparisons.state()``; ``merge_reports`` adds the states of the
same (graph, shadow) together and reports them as one process that saw every request
would: counts, latency and difference histograms and confusion matrices add exactly (see
``engine.shadow.histogram``), so the merged quantiles are those of all the requests.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from engine.shadow.compare import ShadowComparison, ShadowConfig
from engine.shadow.report import ShadowReport, ShadowSummary
from engine.shadow.rules import CompareRule


def merge_comparisons(
    states: Iterable[Iterable[Mapping[str, Any]]],
) -> dict[tuple[str, str], ShadowComparison]:
    """Every (graph, shadow) of every worker's states, their numbers added together."""
    merged: dict[tuple[str, str], ShadowComparison] = {}
    for worker in states:
        for state in worker:
            key = (str(state["graph"]), str(state["shadow"]))
            comparison = merged.get(key)
            if comparison is None:
                rules = {n: CompareRule.from_json(o["rule"]) for n, o in state["outputs"].items()}
                config = ShadowConfig(graph=key[0], shadow=key[1], target=str(state["target"]), rules=rules)
                comparison = merged[key] = ShadowComparison(config)
            comparison.absorb(state)
    return merged


def merge_reports(states: Iterable[Iterable[Mapping[str, Any]]]) -> ShadowReport:
    """The report of every worker's comparisons together."""
    graphs: dict[str, dict[str, ShadowSummary]] = {}
    for (graph, shadow), comparison in sorted(merge_comparisons(states).items()):
        graphs.setdefault(graph, {})[shadow] = comparison.snapshot()
    return ShadowReport(graphs)
