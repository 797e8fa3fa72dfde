"""The set of served graphs: load a folder, keep versions, reload with an atomic swap.

Layout under the repository root (see docs/graph-language.md):

    graphs/<name>/graph.yaml            one version (its ``version:`` key, default 1)
    graphs/<name>/<N>/graph.yaml        several versions, Triton-style numbered folders

A (re)load compiles the graph (which validates it and loads its models), runs
one warm-up request through it, and only then swaps it in. The swap replaces
one immutable ``GraphEntry`` in a dict by another, so a request that already
picked a version finishes on it. A version that fails to load never replaces a
working one; its error stays visible (``entry.last_error``) until a later load
succeeds.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from engine.errors import (
    DeadlineExceeded,
    Diagnostic,
    EngineError,
    GraphInvalid,
    GraphNotFound,
    GraphUnavailable,
)
from engine.execution import GraphStats, PlanRunner
from engine.graph import CompiledGraph, find_graph_files, load_graph, model_references
from engine.graph.compiling.redactions import with_derived_redactions
from engine.graph.values.logging_policy import LoggingPolicy
from engine.graph.values.plan import NodeInfo, Plan
from engine.interfaces import FeatureCatalog, ModelSource, RuntimeFactory
from engine.monitoring.drift import VersionDrift
from engine.monitoring.layout import plan_columns
from engine.monitoring.profile import read_profile
from engine.monitoring.quality import QualityConfig, QualityWindow
from engine.shadow.compare import ShadowComparisons, ShadowConfig
from engine.shadow.dispatch import GraphCandidate, ShadowBinding, ShadowDispatcher
from engine.shadow.rules import parse_rules
from engine.tensors import DataType, TensorSpec

log = logging.getLogger("engine.repository")

GRAPH_FILE = "graph.yaml"

READY, FAILED, UNAVAILABLE = "READY", "FAILED", "UNAVAILABLE"


SETTLE_S = 0.5
"""An automatic reload (polling by --reload-interval) leaves a folder changed more recently than this for the
next round: a graph.yaml caught half-written is not read (and rejected) before it is complete."""


@dataclass(frozen=True, slots=True, weakref_slot=True, eq=False)  # identity: one object per version
class ServedGraph:
    """One ready version of a graph, with what serving it needs worked out once.

    Its models are closed when the last reference goes: after it was swapped out and the
    requests that already held it have finished.
    """

    graph: CompiledGraph
    runner: PlanRunner
    fingerprint: str
    source_key: str  # the numbered folder it came from, or "*" for an unnumbered graph folder
    output_index: dict[str, int]  # served output name -> position in the runner's result
    input_names: tuple[str, ...]  # graph inputs, in the order the runner takes them
    output_names: tuple[str, ...]  # graph outputs, in the order the runner returns them
    policy: LoggingPolicy  # the request-log policy, redaction extended to values derived from redacted ones
    models: dict[str, str]  # node -> sha256 of the model it runs
    checks_contracts: bool = False  # inputs or features fields carry ``contract:`` rules
    drift: VersionDrift | None = None  # live counts against the folder's profile.json (monitoring on)
    quality: QualityWindow | None = None  # ``quality:``: predictions awaiting labels, joined pairs
    # node -> the registry version / URL its model came from; the response parameters asked for by `lineage`
    sources: dict[str, str] = field(default_factory=dict)
    lineage: dict[str, str] = field(default_factory=dict)
    splits_rows: bool = False  # a ``split`` node assigns rows to arms (quality per arm)

    @property
    def name(self) -> str:
        return self.graph.name

    @property
    def version(self) -> str:
        return self.graph.version

    @property
    def stats(self) -> GraphStats:
        return self.runner.stats


@dataclass(frozen=True, slots=True)
class GraphEntry:
    """Everything served under one graph name; replaced whole on every change."""

    name: str
    folder: Path
    versions: dict[str, ServedGraph] = field(default_factory=dict)
    latest: str = ""
    last_error: str = ""
    diagnostics: tuple[Diagnostic, ...] = ()
    unloaded: bool = False
    rejected: dict[str, str] = field(default_factory=dict)  # version folder ("" unnumbered) -> why
    candidate: str = ""  # the newest version, carrying a ``rollout:`` plan not yet promoted (not ``latest``)

    @property
    def state(self) -> str:
        if self.versions and not self.unloaded:
            return READY
        return FAILED if self.last_error else UNAVAILABLE


@dataclass(frozen=True, slots=True)
class ReloadResult:
    name: str
    version: str
    action: str  # loaded | unchanged | unloaded | failed
    error: str = ""


class GraphRepository:
    def __init__(
        self,
        root: Path,
        runtimes: RuntimeFactory,
        features: FeatureCatalog | None = None,
        shadows: ShadowDispatcher | None = None,
        models: ModelSource | None = None,
        *,
        monitoring: bool = True,
    ) -> None:
        self.root = root
        self.monitoring = monitoring  # drift (versions with a profile.json) and label windows (quality:)
        self.runtimes = runtimes
        self.features = features
        self.models = models  # fetches ``model:`` references (registry, URLs); None: references fail
        self.shadows = shadows  # starts every graph's shadows; None: shadows are loaded, never run
        # their numbers, kept across reloads of a version
        self.comparisons = shadows.comparisons if shadows is not None else ShadowComparisons()
        # live graph -> the graphs mirroring it (``shadow_of:``), latest version each, bound to their numbers
        self._mirrors: dict[str, tuple[ShadowBinding, ...]] = {}
        self._entries: dict[str, GraphEntry] = {}
        self._reload_lock = asyncio.Lock()
        self._swap_lock = threading.Lock()
        self.listeners: list[Callable[[str, bool], None]] = []
        self.load_failures: dict[str, int] = {}
        # (graph, version folder) -> the rejected files' fingerprint, the error and its diagnostics
        self._rejected: dict[tuple[str, str], tuple[str, str, tuple[Diagnostic, ...]]] = {}
        """Versions rejected at (re)load, per graph name (for metrics)."""
        self.promoted: set[tuple[str, str]] = set()
        """(graph, version) whose ``rollout:`` finished: they may be ``latest`` (set by the rollouts)."""

    # -- reading (the request path) ---------------------------------------------------------
    def get(self, name: str, version: str = "") -> ServedGraph:
        entry = self._entries.get(name)
        if entry is None:
            raise GraphNotFound(name, version)
        if entry.unloaded or not entry.versions:
            why = "unloaded" if entry.unloaded else f"failed to load: {entry.last_error or 'no versions'}"
            raise GraphUnavailable(f"graph '{name}' is not ready ({why})")
        served = entry.versions.get(version or entry.latest)
        if served is None:
            raise GraphNotFound(name, version)
        return served

    def entry(self, name: str) -> GraphEntry:
        entry = self._entries.get(name)
        if entry is None:
            raise GraphNotFound(name)
        return entry

    def entries(self) -> list[GraphEntry]:
        return [self._entries[name] for name in sorted(self._entries)]

    def mirrors_of(self, name: str) -> tuple[ShadowBinding, ...]:
        """The graphs mirroring every request of graph ``name`` (``shadow_of:``), bound to their
        numbers; empty when none does or shadows do not run here."""
        return self._mirrors.get(name, ())

    def _rebuild_mirrors(self) -> None:
        if self.shadows is None:
            return
        mirrors: dict[str, list[ShadowBinding]] = {}
        for entry in self._entries.values():
            served = entry.versions.get(entry.latest) if not entry.unloaded else None
            spec = served.graph.spec.shadow_of if served is not None else None
            if served is None or spec is None:
                continue
            config = ShadowConfig(
                graph=spec.graph,
                shadow=served.name,
                target="",
                rules=parse_rules(spec.compare) if spec.compare else {},
                sample=spec.sample,
                timeout_s=spec.timeout_s,
            )
            run = served.runner.run
            candidate = GraphCandidate(served.name, run, served.input_names, served.output_names)
            mirrors.setdefault(spec.graph, []).append(self.shadows.bind(config, candidate))
        self._mirrors = {name: tuple(bindings) for name, bindings in mirrors.items()}

    def is_ready(self, name: str, version: str = "") -> bool:
        try:
            self.get(name, version)
        except EngineError:
            return False
        return True

    # -- changing ---------------------------------------------------------------------------
    async def load_all(self) -> list[ReloadResult]:
        return await self.reload(None)

    async def reload(
        self, names: Sequence[str] | None = None, *, automatic: bool = False
    ) -> list[ReloadResult]:
        """Re-read the named graphs (all when ``names`` is None or empty) from disk.

        A graph that was unloaded stays unloaded when everything is re-read (SIGHUP, polling);
        naming it loads it again. ``automatic`` (polling by the reload interval): a folder changed less than
        ``SETTLE_S`` ago is left for the next round (a file caught half-written is not read), and
        a version rejected before is not read again until its files change (logged once per
        change, not once per tick); it keeps its reason in the index."""
        async with self._reload_lock:
            found = _scan(self.root)
            if names:
                wanted = list(names)
            else:
                kept = {n for n, e in self._entries.items() if e.unloaded}
                wanted = sorted((set(found) | set(self._entries)) - kept)
            results: list[ReloadResult] = []
            for name in wanted:
                if name not in found and name not in self._entries:
                    raise GraphNotFound(name)
                results.extend(await self._reload_one(name, found.get(name, {}), automatic))
            return results

    def unload(self, name: str) -> None:
        entry = self.entry(name)
        self._swap(replace(entry, unloaded=True))

    async def _reload_one(
        self, name: str, files: dict[str, Path], automatic: bool = False
    ) -> list[ReloadResult]:
        entry = self._entries.get(name) or GraphEntry(name=name, folder=self.root / name)
        versions = dict(entry.versions)
        results: list[ReloadResult] = []
        errors: list[str] = []
        rejected: dict[str, str] = {}
        diagnostics: list[Diagnostic] = []
        for version, served in list(versions.items()):
            if served.source_key not in files:
                del versions[version]
                results.append(ReloadResult(name, version, "unloaded"))
        for key, path in files.items():
            folder_print, newest_ns = _folder_state(path.parent, skip_numbered=key == "*")
            fingerprint = folder_print + await self._references_now(path)
            current = next((v for v in versions.values() if v.source_key == key), None)
            if current is not None and current.fingerprint == fingerprint and not entry.unloaded:
                results.append(ReloadResult(name, current.version, "unchanged"))
                continue
            shown = current.version if current is not None else (key if key != "*" else "")
            settling = time.time_ns() - newest_ns < SETTLE_S * 1e9 or _empty(path)
            if automatic and settling:  # an empty graph.yaml: truncated by a writer about to write
                results.append(ReloadResult(name, shown, "unchanged"))  # still being written
                if (name, key) in self._rejected:  # still the rejected version until it settles
                    rejected[key if key != "*" else ""] = self._rejected[(name, key)][1]
                if current is None and (name, key) in self._rejected:
                    errors.append(self._rejected[(name, key)][1])
                continue
            known_bad = self._rejected.get((name, key))
            if automatic and known_bad is not None and known_bad[0] == fingerprint:
                errors.append(known_bad[1])  # the same broken files: not read (nor logged) again
                diagnostics.extend(known_bad[2])
                rejected[key if key != "*" else ""] = known_bad[1]  # its index row stays
                results.append(ReloadResult(name, shown, "unchanged", known_bad[1]))
                continue
            try:
                served = await self._load_version(path, fingerprint, key)
            except GraphInvalid as exc:
                if automatic and _folder_state(path.parent, skip_numbered=key == "*")[0] != folder_print:
                    results.append(ReloadResult(name, shown, "unchanged"))  # written to while read
                    continue
                self._rejected[(name, key)] = (fingerprint, str(exc), exc.diagnostics)
                errors.append(str(exc))
                rejected[key if key != "*" else ""] = str(exc)
                self.load_failures[name] = self.load_failures.get(name, 0) + 1
                diagnostics.extend(exc.diagnostics)
                results.append(ReloadResult(name, key if key != "*" else "", "failed", str(exc)))
                log.warning("graph %s (%s) rejected: %s", name, path, exc)
                continue
            self._rejected.pop((name, key), None)
            if current is not None:
                versions.pop(current.version, None)
            versions[served.version] = served
            results.append(ReloadResult(name, served.version, "loaded"))
            log.info("graph %s version %s loaded from %s", name, served.version, path)
        latest, candidate = self._latest(name, versions)
        self._swap(
            GraphEntry(
                name,
                entry.folder,
                versions,
                latest,
                "; ".join(errors),
                tuple(diagnostics),
                rejected=rejected,
                candidate=candidate,
            )
        )
        return results

    def _latest(self, name: str, versions: dict[str, ServedGraph]) -> tuple[str, str]:
        """The version served when none is asked for, and the rollout candidate ("" if none).

        A version with a ``rollout:`` plan becomes latest only once promoted; until then the
        newest version without one (or promoted) serves, and the newest is the candidate."""
        if not versions:
            return "", ""
        order = sorted(versions, key=_version_key, reverse=True)

        def settled(version: str) -> bool:
            return versions[version].graph.spec.rollout is None or (name, version) in self.promoted

        latest = next((v for v in order if settled(v)), order[-1])
        candidate = order[0] if order[0] != latest else ""
        return latest, candidate

    def promote(self, name: str, version: str) -> None:
        """Make ``version`` (a rollout's candidate) the latest version of graph ``name``."""
        self.promoted.add((name, version))
        entry = self._entries.get(name)
        if entry is not None:
            latest, candidate = self._latest(name, entry.versions)
            self._swap(replace(entry, latest=latest, candidate=candidate))

    def _drift(self, graph: CompiledGraph, folder: Path) -> VersionDrift | None:
        """Drift counting for a version whose folder has a profile; a bad profile is logged, and
        the version serves unmonitored (monitoring never decides whether a graph serves)."""
        try:
            profile = read_profile(folder)
        except ValueError as exc:
            log.warning("graph %s version %s: not monitored: %s", graph.name, graph.version, exc)
            return None
        if profile is None:
            return None
        drift = VersionDrift(graph.name, graph.version, profile, plan_columns(graph.plan))
        if drift.unmatched:
            log.warning(
                "graph %s version %s: profile columns not in the graph: %s",
                graph.name,
                graph.version,
                ", ".join(drift.unmatched),
            )
        return drift

    def quality_windows(self, graph: str = "") -> list[QualityWindow]:
        """Every served version's label window (of ``graph``, or all), newest version first."""
        found = []
        for entry in list(self._entries.values()):
            if graph and entry.name != graph:
                continue
            for served in sorted(
                entry.versions.values(), key=lambda s: -int(s.version) if s.version.isdigit() else 0
            ):
                if served.quality is not None:
                    found.append(served.quality)
        return found

    def drifts(self) -> list[VersionDrift]:
        """Every served version's drift counters."""
        return [
            served.drift
            for entry in list(self._entries.values())
            for served in list(entry.versions.values())
            if served.drift is not None
        ]

    async def _references_now(self, path: Path) -> str:
        """What the graph's model references name now (an alias: its current version), for the
        fingerprint, so a moved alias is a change. A reference that cannot be resolved at all (registry
        down, nothing cached for it) is a change too: the load then fails naming it, and the serving
        version stays."""
        references = await asyncio.to_thread(model_references, path)
        if not references or self.models is None:
            return ""
        models = self.models

        def identify() -> str:
            named = []
            for reference, pin in references:
                try:
                    named.append(models.identify(reference, pin))
                except ValueError:
                    named.append(f"{reference}=unresolved")
            return "|".join(named)

        return "+" + hashlib.sha256((await asyncio.to_thread(identify)).encode()).hexdigest()

    async def _load_version(self, path: Path, fingerprint: str, key: str) -> ServedGraph:
        graph = await asyncio.to_thread(load_graph, path, self.runtimes, self.features, self.models)
        try:
            if key != "*" and graph.version != key:
                message = f"graph.yaml says version {graph.version} but its folder is version {key}"
                raise GraphInvalid(graph.name, [Diagnostic(str(path), 1, 1, message)])
            try:  # one request through the whole plan before it may serve
                await PlanRunner(graph.plan, stores=False).run(warmup_inputs(graph.plan.inputs))
            except DeadlineExceeded as exc:  # slow when cold is not broken: serve, but say so
                log.warning(
                    "graph %s version %s: warm-up request was slow: %s", graph.name, graph.version, exc
                )
            except EngineError as exc:
                message = f"warm-up request failed: {exc}"
                raise GraphInvalid(graph.name, [Diagnostic(str(path), 1, 1, message)]) from exc
        except BaseException:
            graph.close()  # never served: release its models now
            raise
        runner = PlanRunner(  # warm-up is not traffic: fresh stats, and no shadows ran for it
            graph.plan, GraphStats(graph.name, graph.version), shadows=self.shadows
        )
        plan = graph.plan
        references = {out.name: out.ref.text for out in graph.spec.outputs}
        sources = {
            n.name: graph.artifacts[n.model_path].resolved
            for n in plan.nodes
            if n.model_path in graph.artifacts
        }
        served = ServedGraph(
            graph=graph,
            runner=runner,
            fingerprint=fingerprint,
            source_key=key,
            output_index={spec.name: i for i, spec in enumerate(plan.outputs)},
            input_names=tuple(spec.name for spec in plan.inputs),
            output_names=tuple(spec.name for spec in plan.outputs),
            policy=with_derived_redactions(graph.spec.logging, plan.nodes, references),
            models={n.name: n.model_sha256 for n in plan.nodes if n.model_sha256},
            checks_contracts=bool(plan.contracts) or runner.has_contracts,
            drift=self._drift(graph, path.parent) if self.monitoring else None,
            quality=_quality_window(graph, plan) if self.monitoring else None,
            splits_rows=runner.has_splits,
            sources=sources,
            lineage=_lineage(plan.nodes, sources),
        )
        weakref.finalize(served, graph.close)
        return served

    def _swap(self, entry: GraphEntry) -> None:
        with self._swap_lock:
            entries = dict(self._entries)
            entries[entry.name] = entry
            self._entries = entries
            self._rebuild_mirrors()
        for listener in self.listeners:
            listener(entry.name, entry.state == READY)


def _lineage(nodes: Sequence[NodeInfo], sources: dict[str, str]) -> dict[str, str]:
    """What produced a response of this version: each live model's digest and where it came from
    (a registry version, a pinned URL, or its file in the graph folder)."""
    found: dict[str, str] = {}
    for node in nodes:
        if node.kind == "model" and node.model_sha256:
            found[f"lineage.{node.name}.sha256"] = node.model_sha256
            found[f"lineage.{node.name}.source"] = sources.get(node.name, node.model_path or "")
    return found


def warmup_inputs(specs: Sequence[TensorSpec]) -> list[np.ndarray]:
    """One all-zeros row per input (BYTES: empty strings), shaped as declared."""
    arrays = []
    for spec in specs:
        shape = tuple(1 if d == -1 else d for d in spec.shape)
        if spec.datatype is DataType.BYTES:
            arrays.append(np.full(shape, b"", dtype=object))
        else:
            arrays.append(np.zeros(shape, dtype=spec.datatype.numpy_dtype))
    return arrays


def _scan(root: Path) -> dict[str, dict[str, Path]]:
    """graph name -> {version folder name, or "*" for an unnumbered folder: graph.yaml}."""
    found: dict[str, dict[str, Path]] = {}
    for path in find_graph_files(root):
        folder = path.parent
        if folder.name.isdigit() and folder.parent != root:
            found.setdefault(folder.parent.name, {})[folder.name] = path
        else:
            found.setdefault(folder.name, {})["*"] = path
    return found


def _empty(path: Path) -> bool:
    try:
        return path.stat().st_size == 0
    except OSError:
        return True


def _folder_state(folder: Path, *, skip_numbered: bool) -> tuple[str, int]:
    """What a reload compares: every file's name, size and mtime (numbered sub-folders excluded),
    and the text of the graph file itself, so an edit is seen even when it keeps the size and
    lands within the file system's mtime resolution; and the newest mtime (ns) among them."""
    newest = 0
    digest = hashlib.sha256()
    files = (
        folder.rglob("*")
        if not skip_numbered
        else (p for p in folder.rglob("*") if not p.relative_to(folder).parts[0].isdigit())
    )
    for path in sorted(p for p in files if p.is_file()):
        stat = path.stat()
        newest = max(newest, stat.st_mtime_ns)
        digest.update(f"{path.relative_to(folder)}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
        if path.name == GRAPH_FILE and path.parent == folder:
            digest.update(path.read_bytes())
    return digest.hexdigest(), newest


def _version_key(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (-1, version)


def _quality_window(graph: CompiledGraph, plan: Plan) -> QualityWindow | None:
    spec = graph.spec.quality
    if spec is None:
        return None
    index = next(i for i, out in enumerate(plan.outputs) if out.name == spec.output)
    return QualityWindow(
        graph.name, graph.version, QualityConfig(spec.output, index, spec.kind, spec.threshold)
    )
