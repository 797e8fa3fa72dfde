"""Control operations: what each does on one process, and how the workers' answers merge.

Each operation is a name and plain JSON arguments, so it can travel to other workers
(``engine.serving.control``). ``ServerOperations.run`` applies one to this process's
repository and shadow numbers; the ``merge_*`` functions fold the workers' answers into the
one answer a single process would give:

    reload    {names: [...], automatic} -> per version: loaded | unchanged | unloaded | failed, fingerprints
    unload    {name}              -> null
    stats     {name: "" | NAME}   -> every served version's counters (``GraphStats.to_state``)
    shadows   {graph: "" | NAME}  -> the shadow comparisons' state (``ShadowComparisons.state``)
    index     {}                  -> every graph: state, versions, errors, fingerprints
    drift     {graph: "" | NAME}  -> every monitored version's live counts (``VersionDrift.state``)
    feedback  {graph, labels: [[id, row, label], ...]}
                                  -> positions of the labels joined here, by outcome (``join_labels``)
    quality   {graph: "" | NAME}  -> every version's joined pairs (``QualityWindow.state``)
    rollout   {action: counts}    -> every rollout's numbers of its step (``Rollout.counts``)
              {action: view, graph}
                                  -> the rollout as this worker has it, and whether it judges
              {action: apply, graph, candidate, step, status, event, ...}
                                  -> the rollout after a transition (``Rollouts.apply``)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from engine.execution.stats import GraphStats, merge_stats
from engine.monitoring.drift import DriftState, merge_drift
from engine.monitoring.quality import Quality, join_labels, merge_quality
from engine.repository import GraphRepository
from engine.serving.control import Answer
from engine.serving.rollout import Rollouts
from engine.serving.views import GraphSummary, IndexRow, ReloadOutcome, version_key
from engine.shadow.compare import ShadowComparisons
from engine.shadow.merge import merge_reports
from engine.shadow.report import ShadowReport

READY = "READY"


class ServerOperations:
    """Runs control operations on one process's state."""

    def __init__(
        self, repository: GraphRepository, comparisons: ShadowComparisons, rollouts: Rollouts | None = None
    ) -> None:
        self.repository = repository
        self.comparisons = comparisons
        self.rollouts = rollouts

    async def run(self, op: str, args: Mapping[str, Any]) -> Any:
        if op == "reload":
            return await self._reload([str(n) for n in args.get("names", ())], bool(args.get("automatic")))
        if op == "unload":
            self.repository.unload(str(args["name"]))
            return None
        if op == "stats":
            return self._stats(str(args.get("name", "")))
        if op == "shadows":
            return self.comparisons.state(str(args.get("graph", "")) or None)
        if op == "index":
            return self._index()
        if op == "drift":
            return self._drift(str(args.get("graph", "")))
        if op == "feedback":
            return self._feedback(args)
        if op == "quality":
            return [w.state() for w in self.repository.quality_windows(str(args.get("graph", "")))]
        if op == "rollout" and self.rollouts is not None:
            if args.get("action") == "counts":
                return self.rollouts.counts()
            if args.get("action") == "view":
                return {**self.rollouts.view(str(args["graph"])), "judge": self.rollouts.persist}
            return self.rollouts.apply(args)
        raise ValueError(f"unknown control operation {op!r}")

    async def _reload(self, names: list[str], automatic: bool = False) -> dict[str, Any]:
        results = await self.repository.reload(names or None, automatic=automatic)
        return {
            "results": [
                {"name": r.name, "version": r.version, "action": r.action, "error": r.error} for r in results
            ],
            "fingerprints": self._fingerprints(),
        }

    def _stats(self, name: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for entry in self.repository.entries():
            if name and entry.name != name:
                continue
            found.extend(served.stats.to_state() for served in list(entry.versions.values()))
        return found

    def _drift(self, graph: str) -> list[dict[str, Any]]:
        found = []
        for drift in self.repository.drifts():
            if not graph or drift.graph == graph:
                drift.count()  # what is queued, so the answer includes the latest requests
                found.append(drift.state())
        return found

    def _feedback(self, args: Mapping[str, Any]) -> dict[str, list[int]]:
        windows = self.repository.quality_windows(str(args["graph"]))
        labels = ((str(i), int(r), float(v)) for i, r, v in args["labels"])
        return join_labels(windows, labels)

    def _index(self) -> list[dict[str, Any]]:
        return [
            {
                "name": entry.name,
                "state": entry.state,
                "latest": entry.latest,
                "versions": sorted(entry.versions, key=version_key),
                "last_error": entry.last_error,
                "rejected": dict(entry.rejected),
            }
            for entry in self.repository.entries()
        ]

    def _fingerprints(self) -> dict[str, dict[str, str]]:
        return {
            entry.name: {v: served.fingerprint for v, served in entry.versions.items()}
            for entry in self.repository.entries()
            if not entry.unloaded
        }


def merge_reload(answer: Answer) -> list[ReloadOutcome]:
    """One outcome per version: ``failed`` if it failed on any worker (naming which), else
    ``loaded`` if any worker loaded it, else what they agree on. Workers that did not answer
    are named (they load from the graph folders when they restart)."""
    seen: dict[tuple[str, str], list[tuple[int, ReloadOutcome]]] = {}
    for part in answer.parts:
        part.raise_failure()
        for raw in part.value["results"]:
            outcome = ReloadOutcome(raw["name"], raw["version"], raw["action"], raw["error"])
            seen.setdefault((outcome.name, outcome.version), []).append((part.worker, outcome))
    several = len(answer.parts) + len(answer.missing) > 1
    outcomes = []
    for (name, version), per_worker in seen.items():
        failed = [(w, o) for w, o in per_worker if o.action == "failed"]
        if failed:
            errors = [f"worker {w}: {o.error}" if several else o.error for w, o in failed]
            outcomes.append(ReloadOutcome(name, version, "failed", "; ".join(dict.fromkeys(errors))))
        elif any(o.action == "loaded" for _, o in per_worker):
            outcomes.append(ReloadOutcome(name, version, "loaded"))
        else:
            outcomes.append(per_worker[0][1])
    if answer.missing:
        names = ", ".join(str(w) for w in answer.missing)
        outcomes.append(
            ReloadOutcome(
                "*", "", "failed", f"worker(s) {names} did not answer; they reload when they restart"
            )
        )
    return outcomes


def merge_statistics(answer: Answer) -> list[GraphStats]:
    """Every served version's counters summed over the workers, by (graph, version)."""
    by_key: dict[tuple[str, str], list[GraphStats]] = {}
    for states in answer.values():
        for state in states:
            stats = GraphStats.from_state(state)
            by_key.setdefault((stats.name, stats.version), []).append(stats)
    return [
        parts[0] if len(parts) == 1 else merge_stats(parts)
        for _, parts in sorted(by_key.items(), key=lambda kv: (kv[0][0], version_key(kv[0][1])))
    ]


def merge_drift_states(answer: Answer) -> list[DriftState]:
    """Every monitored version's live counts, summed over the workers minute by minute."""
    return merge_drift(state for states in answer.values() for state in states)


def merge_quality_states(answer: Answer) -> list[Quality]:
    """Every version's joined pairs over the workers: quality computed on all of them."""
    return merge_quality(state for states in answer.values() for state in states)


def merge_shadows(answer: Answer) -> ShadowReport:
    return merge_reports(answer.values())


def _graphs(answer: Answer) -> dict[str, list[tuple[int, Mapping[str, Any]]]]:
    by_name: dict[str, list[tuple[int, Mapping[str, Any]]]] = {}
    for part in answer.parts:
        if not part.ok:
            continue
        for row in part.value:
            by_name.setdefault(row["name"], []).append((part.worker, row))
    return by_name


def _agreement(
    rows: Sequence[tuple[int, Mapping[str, Any]]], *, with_errors: bool = True
) -> tuple[str, str, tuple[str, ...]]:
    """(state, reason, versions) of one graph over the workers that answered; ``with_errors``:
    the reason includes the graph's load errors (else only the workers' disagreements)."""
    states = {row["state"] for _, row in rows}
    state = READY if states == {READY} else next(row["state"] for _, row in rows if row["state"] != READY)
    errors = list(dict.fromkeys(row["last_error"] for _, row in rows if row["last_error"] and with_errors))
    version_sets = {tuple(row["versions"]) for _, row in rows}
    versions = tuple(sorted({v for _, row in rows for v in row["versions"]}, key=version_key))
    if len(version_sets) > 1:
        errors.append(
            "workers disagree: "
            + "; ".join(f"worker {w} serves [{', '.join(row['versions'])}]" for w, row in rows)
        )
    if len(states) > 1:
        errors.append("; ".join(f"worker {w} is {row['state']}" for w, row in rows if row["state"] != READY))
    return state, "; ".join(errors), versions


def merge_index(answer: Answer, *, ready_only: bool = False) -> list[IndexRow]:
    """Repository index rows for the whole server: a version is READY when every worker serves it."""
    rows: list[IndexRow] = []
    for name, parts in sorted(_graphs(answer).items()):
        state, reason, versions = _agreement(parts)
        if ready_only and state != READY:
            continue
        rejected: dict[str, str] = {}
        for _, row in parts:
            for version, why in row.get("rejected", {}).items():
                rejected.setdefault(version, why)
        if not versions:
            rows.append(IndexRow(name, "", state, reason))
            continue
        # a version that serves is not blamed for another's failure: that one gets its own row
        served_reason = _agreement(parts, with_errors=False)[1]
        for version in versions:
            everywhere = all(version in row["versions"] for _, row in parts)
            serving = state == READY and everywhere
            why = served_reason
            if version in rejected:  # this version's folder changed and the new copy was rejected
                why = "; ".join(
                    filter(
                        None,
                        [served_reason, f"a new copy was rejected, this one serves: {rejected[version]}"],
                    )
                )
            rows.append(IndexRow(name, version, READY if serving else "UNAVAILABLE", why))
        if not ready_only:
            for version, why in sorted(rejected.items()):
                if version not in versions:
                    rows.append(IndexRow(name, version, "UNAVAILABLE", why))
    return rows


def merge_summaries(answer: Answer) -> list[GraphSummary]:
    """``ListGraphs`` for the whole server."""
    summaries = []
    for name, parts in sorted(_graphs(answer).items()):
        state, reason, versions = _agreement(parts)
        latest = max((row["latest"] for _, row in parts if row["latest"]), key=version_key, default="")
        summaries.append(GraphSummary(name, latest, state, reason, versions))
    return summaries
