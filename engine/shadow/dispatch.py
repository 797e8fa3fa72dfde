"""``ShadowDispatcher``: the one place shadow work starts, for both kinds of shadow.

A *node* shadow (``shadow: TARGET`` in a graph) runs a candidate model on the inputs its
target node received; a *graph* shadow (``shadow_of: GRAPH``) runs a whole candidate graph
on the live request's inputs, matched by name. Both are a ``Candidate`` bound to the
``ShadowComparison`` that keeps its numbers (``bind``, once per graph version), and both
start through ``launch``: it builds the pool's work unit (the only place one is built),
hands it to the ``ShadowPool`` (sampling, bounds, shedding) and returns the future through
which the live side's outputs reach the comparison once known. The executor launches node
shadows when their target runs; the inference core launches graph shadows when a request
of the live graph starts. Neither can fail or delay the live request: ``launch`` never
raises and never awaits.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from engine.interfaces import ModelRuntime
from engine.shadow.compare import ShadowComparison, ShadowComparisons, ShadowConfig
from engine.shadow.outcome import RequestShadows
from engine.shadow.runner import LiveResult, ShadowPool, ShadowRun, ShadowWork

log = logging.getLogger("engine.shadow")


class Candidate(Protocol):
    """What a shadow runs: given the live side's arrays (and their names), the candidate's outputs."""

    async def __call__(
        self, arrays: Sequence[np.ndarray], names: Sequence[str]
    ) -> Mapping[str, np.ndarray]: ...


@dataclass(frozen=True, slots=True)
class ModelCandidate:
    """A candidate model run on its target node's input arrays (same order as the target's)."""

    runtime: ModelRuntime
    output_names: tuple[str, ...]

    async def __call__(self, arrays: Sequence[np.ndarray], names: Sequence[str]) -> Mapping[str, np.ndarray]:
        run = await self.runtime.run(arrays)
        return dict(zip(self.output_names, run.outputs, strict=True))


GraphRun = Callable[[list[np.ndarray]], Awaitable[tuple[np.ndarray | None, ...]]]


@dataclass(frozen=True, slots=True)
class GraphCandidate:
    """A whole candidate graph run on the live request's inputs, taken by name.

    ``run`` runs the candidate's plan on arrays in ``input_names`` order and returns its
    outputs in ``output_names`` order (``PlanRunner.run``)."""

    graph: str
    run: GraphRun
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]

    async def __call__(self, arrays: Sequence[np.ndarray], names: Sequence[str]) -> Mapping[str, np.ndarray]:
        given = dict(zip(names, arrays, strict=True))
        missing = [name for name in self.input_names if name not in given]
        if missing:
            raise ValueError(
                f"the live request has no input {', '.join(missing)} (graph '{self.graph}' needs it)"
            )
        outputs = await self.run([given[name] for name in self.input_names])
        return {n: a for n, a in zip(self.output_names, outputs, strict=True) if a is not None}


@dataclass(frozen=True, slots=True)
class ShadowBinding:
    """One shadow of a served version: its candidate and where its numbers go."""

    comparison: ShadowComparison
    candidate: Candidate


class ShadowDispatcher:
    """Starts every shadow of one process in its ``ShadowPool``; comparisons live in ``comparisons``."""

    def __init__(self, pool: ShadowPool, comparisons: ShadowComparisons | None = None) -> None:
        self.pool = pool
        self.comparisons = comparisons if comparisons is not None else ShadowComparisons()

    def bind(self, config: ShadowConfig, candidate: Candidate) -> ShadowBinding:
        """The binding of ``candidate`` to its comparison (kept across reloads while its rules hold)."""
        return ShadowBinding(self.comparisons.add(config), candidate)

    def launch(
        self,
        bindings: Sequence[ShadowBinding],
        arrays: Sequence[np.ndarray],
        names: Sequence[str] = (),
        *,
        request_id: str = "",
        results: RequestShadows | None = None,
    ) -> asyncio.Future[LiveResult | None]:
        """Submit each binding's run on ``arrays``; the caller resolves the returned future with
        the live outputs (``LiveResult``) once known, or ``None`` when the live side failed."""
        live: asyncio.Future[LiveResult | None] = asyncio.get_running_loop().create_future()
        for binding in bindings:
            try:
                work = _work(binding.candidate, arrays, names)
                self.pool.submit(binding.comparison, work, live=live, request_id=request_id, results=results)
            except Exception:  # a bug here must never reach the live request
                self.pool.internal_errors += 1
                log.exception("shadow %s could not start", binding.comparison.config.shadow)
        return live


def _work(candidate: Candidate, arrays: Sequence[np.ndarray], names: Sequence[str]) -> ShadowWork:
    """The pool's work unit: run ``candidate`` on the live arrays, timed."""

    async def run() -> ShadowRun:
        start = time.perf_counter_ns()
        outputs = await candidate(arrays, names)
        return ShadowRun(outputs, time.perf_counter_ns() - start)

    return run
