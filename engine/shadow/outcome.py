"""One request's shadow outcomes, and their form in the request record (the ``shadow`` field).

``ShadowPool`` settles one ``ShadowOutcome`` per shadow it was asked to run into the
request's ``RequestShadows``, including those it skipped by sampling or shed. The
request recorder awaits ``RequestShadows.settled(bound)`` before it builds the
record, then writes ``shadow_field(...)``. A shadow's run is bounded by its timeout,
but not its wait in the shadow queue; one still running when the recorder's bound
(``request_log.shadow_wait_s``) runs out is written as ``unsettled``.
Layout (``docs/request-log.md``, *Shadow results*)::

    "shadow": {"<shadow>": {"target": "<node or ''>", "status": "ok", "error": "",
                            "duration_us": 130, "live_duration_us": 95,
                            "compare": {"<output>": {"kind": "numeric", "abs_tol": 0.05, "rel_tol": 0.0}},
                            "outputs": {"<output>": tensor}, "live": {"<output>": tensor},
                            "agree": {"<output>": {"rows": 1, "agree": 1}}}}

Only ``target`` and ``status`` are always present; the rest as the status allows.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.shadow.compare import OK, SHED, SKIPPED, UNSETTLED, Verdict
from engine.shadow.rules import CompareRule

TensorJson = Callable[[str, np.ndarray], dict[str, Any]]
"""Shapes one array for the record: (path such as ``shadow.deep_v2.outputs.prob``, array) -> tensor."""


@dataclass(frozen=True, slots=True)
class ShadowOutcome:
    """What one shadow did for one request. Durations in ns; outputs only when ``status`` is ok."""

    shadow: str
    target: str
    status: str
    error: str = ""
    duration_ns: int = 0
    live_ns: int = 0
    outputs: Mapping[str, np.ndarray] = field(default_factory=dict)
    live: Mapping[str, np.ndarray] = field(default_factory=dict)
    rules: Mapping[str, CompareRule] = field(default_factory=dict)
    verdicts: Mapping[str, Verdict] = field(default_factory=dict)

    @property
    def disagrees(self) -> bool:
        return any(v.disagrees for v in self.verdicts.values())


class RequestShadows:
    """Collects one request's outcomes; ``settled`` waits (bounded) for those still running."""

    def __init__(self, listener: Callable[[ShadowOutcome], None] | None = None) -> None:
        self.outcomes: dict[str, ShadowOutcome] = {}
        self._running: dict[str, str] = {}  # shadow -> target, admitted and not settled yet
        self._done: asyncio.Event | None = None
        self.listener = listener  # told every outcome as it settles (live quality of candidates)
        self.listener_errors = 0

    @property
    def pending(self) -> int:
        """Shadows admitted for this request that have not settled yet."""
        return len(self._running)

    def expect(self, shadow: str, target: str) -> None:
        """``shadow`` is running for this request (the pool calls it when it admits one)."""
        self._running[shadow] = target

    def settle(self, outcome: ShadowOutcome, was_pending: bool = True) -> None:
        self.outcomes[outcome.shadow] = outcome
        if self.listener is not None:
            try:
                self.listener(outcome)
            except Exception:  # a secondary concern: never into the shadow pool
                self.listener_errors += 1
        settled_one = was_pending and self._running.pop(outcome.shadow, None) is not None
        if settled_one and not self._running and self._done is not None:
            self._done.set()

    async def settled(self, timeout_s: float) -> dict[str, ShadowOutcome]:
        """The outcomes once every admitted shadow has settled; after ``timeout_s``, the shadows
        still running are ``unsettled`` (their real outcome reaches the live counters only)."""
        if self._running:
            self._done = self._done or asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._done.wait(), timeout_s)
        return self.so_far()

    def so_far(self) -> dict[str, ShadowOutcome]:
        """The outcomes now, shadows still running included as ``unsettled``."""
        outcomes = dict(self.outcomes)
        for shadow, target in self._running.items():
            outcomes[shadow] = ShadowOutcome(shadow, target, UNSETTLED)
        return outcomes

    @property
    def disagreed(self) -> bool:
        """Some shadow disagreed with live on some row (``sampled_because: shadow_disagreement``)."""
        return any(o.disagrees for o in self.outcomes.values())


def shadow_field(
    outcomes: Mapping[str, ShadowOutcome], tensor: TensorJson, include_live: bool = True
) -> dict[str, Any]:
    """The record's ``shadow`` value. ``include_live=False`` when the record already holds the live
    values compared (``nodes: true`` for a node target; ``outputs`` for a whole-graph shadow)."""
    return {name: shadow_entry(o, tensor, include_live) for name, o in sorted(outcomes.items())}


def shadow_entry(outcome: ShadowOutcome, tensor: TensorJson, include_live: bool = True) -> dict[str, Any]:
    entry: dict[str, Any] = {"target": outcome.target, "status": outcome.status}
    if outcome.error:
        entry["error"] = outcome.error
    if outcome.status not in (SHED, SKIPPED, UNSETTLED):
        entry["duration_us"] = outcome.duration_ns // 1000
    if outcome.status != OK:
        return entry
    prefix = f"shadow.{outcome.shadow}"
    entry["live_duration_us"] = outcome.live_ns // 1000
    entry["compare"] = {n: r.to_json() for n, r in outcome.rules.items()}
    entry["outputs"] = {n: tensor(f"{prefix}.outputs.{n}", a) for n, a in outcome.outputs.items()}
    if include_live:
        entry["live"] = {n: tensor(f"{prefix}.live.{n}", a) for n, a in outcome.live.items()}
    entry["agree"] = {n: {"rows": v.rows, "agree": v.agree} for n, v in outcome.verdicts.items()}
    return entry
