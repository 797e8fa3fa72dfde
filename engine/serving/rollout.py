"""Progressive rollouts: a candidate version replaces the serving one step by step (docs/rollouts.md).

A version whose ``graph.yaml`` carries ``rollout:`` is loaded beside the serving version but
is not ``latest`` (``GraphRepository._latest``); its ``Rollout`` here decides, per request
without an explicit version, which arm serves it (``Rollouts.route``, called by the core):

    shadow step   every request is served by the serving version and mirrored to the candidate
                  through the ShadowDispatcher (compared under the plan's ``compare:`` rules)
    canary step   ``weight`` of the requests (by a hash of the request id, else a counter) are
                  served by the candidate

(with ``sticky: inputs.NAME``: by a hash of that input's first value). Each arm counts its
requests, failed requests and latency over the step (``ArmCounts``; they merge exactly over
workers). ``engine.serving.rollout_gates`` judges a step from those numbers against the plan's
gates; ``rollout_view`` renders them for ``engine rollout``; the control operation ``rollout``
(``engine.serving.operations``) carries the numbers out of every worker and each transition into
every worker; ``engine.serving.rollout_driver`` runs the loop in one place. This module knows
no protobuf, gRPC or HTTP.
"""

from __future__ import annotations

import json
import logging
import os
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import FailedPrecondition, GraphNotFound, Status
from engine.graph.values.spec import RolloutSpec, RolloutStep
from engine.repository import GraphRepository, ServedGraph
from engine.serving.call import InferCall
from engine.shadow.compare import ShadowComparison, ShadowConfig
from engine.shadow.dispatch import GraphCandidate, ShadowBinding, ShadowDispatcher
from engine.shadow.histogram import LogHistogram
from engine.shadow.rules import parse_rules

log = logging.getLogger("engine.rollout")

RUNNING, PAUSED, PROMOTED, ROLLED_BACK = "running", "paused", "promoted", "rolled_back"
STATES = (RUNNING, PAUSED, PROMOTED, ROLLED_BACK)
SHADOW_TIMEOUT_S = 10.0
STATE_FILE = "rollouts.json"


class ArmCounts:
    """One arm's requests, failed requests (any status but OK) and latency (µs) over the current step."""

    __slots__ = ("errors", "latency_us", "requests")

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.latency_us = LogHistogram(low=1.0, high=1e10)

    def record(self, status: Status, took_ns: int) -> None:
        self.requests += 1
        if status is not Status.OK:  # both arms see the same mix of requests, so any failure counts:
            self.errors += 1  # a candidate refusing what the serving version answers is an error
        self.latency_us.add_one(max(1, took_ns // 1000))

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def p99(self) -> float | None:
        return self.latency_us.quantile(0.99)

    def state(self) -> dict[str, Any]:
        return {"requests": self.requests, "errors": self.errors, "latency_us": self.latency_us.state()}

    def absorb(self, state: Mapping[str, Any]) -> None:
        self.requests += int(state["requests"])
        self.errors += int(state["errors"])
        self.latency_us.absorb_state(state["latency_us"])


@dataclass(frozen=True, slots=True)
class Route:
    """Where one request goes: the version that serves it, the counts it adds to, a shadow to mirror it."""

    served: ServedGraph
    counts: ArmCounts
    shadow: ShadowBinding | None = None


class Rollout:
    """One graph's rollout on this process: the two versions, the step, the state and the counts."""

    def __init__(self, spec: RolloutSpec, serving: ServedGraph, candidate: ServedGraph) -> None:
        self.spec = spec
        self.graph = serving.name
        self.serving = serving
        self.candidate = candidate
        self.step = 0
        self.status = RUNNING
        self.reason = ""
        self.gate: dict[str, Any] = {}
        self.events: list[dict[str, Any]] = []
        self.live = ArmCounts()
        self.cand = ArmCounts()
        self.step_started = time.monotonic()
        self.comparison: ShadowComparison | None = None
        self._threshold = 0
        self._seq = 0
        self._live_route = Route(serving, self.live)
        self._cand_route = Route(candidate, self.cand)
        self.sticky = -1  # position of the sticky input; -1: by request id
        if spec.sticky:
            same = (serving.graph.plan.inputs, serving.graph.plan.outputs) == (
                candidate.graph.plan.inputs,
                candidate.graph.plan.outputs,
            )
            if same and spec.sticky in serving.input_names:
                self.sticky = serving.input_names.index(spec.sticky)
            else:  # one decode must serve either arm
                log.warning(
                    "rollout %s v%s: sticky by request id, not %s: its inputs or outputs differ from v%s's",
                    self.graph,
                    candidate.version,
                    spec.sticky,
                    serving.version,
                )

    @property
    def current(self) -> RolloutStep:
        return self.spec.steps[min(self.step, len(self.spec.steps) - 1)]

    @property
    def weight(self) -> float:
        """The share of requests the candidate serves now."""
        if self.status == PROMOTED:
            return 1.0
        if self.status != RUNNING or self.current.kind != "canary":
            return 0.0
        return self.current.weight

    def begin_step(self, dispatcher: ShadowDispatcher | None) -> None:
        """Fresh counts for the current step; a shadow step binds the candidate as a shadow."""
        self.live, self.cand = ArmCounts(), ArmCounts()
        self.step_started = time.monotonic()  # a step's ``duration`` counts from here (this process)
        step = self.current
        self._threshold = int(step.weight * 2**32) if step.kind == "canary" else 0
        shadow = None
        self.comparison = None
        if step.kind == "shadow" and dispatcher is not None:
            config = ShadowConfig(
                graph=self.graph,
                shadow=f"rollout v{self.candidate.version} step {self.step + 1}",
                rules=parse_rules(self.spec.compare) if self.spec.compare else {},
                timeout_s=SHADOW_TIMEOUT_S,
            )
            dispatcher.comparisons.discard(config.graph, config.shadow)  # the step's numbers only
            c = self.candidate
            shadow = dispatcher.bind(
                config, GraphCandidate(c.name, c.runner.run, c.input_names, c.output_names)
            )
            self.comparison = shadow.comparison
        self._live_route = Route(self.serving, self.live, shadow)
        self._cand_route = Route(self.candidate, self.cand)

    def route(self, request_id: str) -> Route:
        """The arm of one request (no explicit version): the same request id always the same arm."""
        if self._threshold:
            if request_id:
                point = zlib.crc32(request_id.encode())
            else:
                self._seq += 1
                point = (self._seq * 0x9E3779B9) & 0xFFFFFFFF
            if point < self._threshold:
                return self._cand_route
        return self._live_route

    def route_key(self, key: np.ndarray, request_id: str) -> Route:
        """The arm of one request by its sticky input's first value (the same value, the same arm)."""
        if not self._threshold or not key.size:
            return self.route(request_id)
        first = key.reshape(-1)[0]
        raw = (
            first
            if isinstance(first, bytes)
            else str(first).encode()
            if key.dtype == object
            else first.tobytes()
        )
        return self._cand_route if zlib.crc32(raw) < self._threshold else self._live_route

    @property
    def live_route(self) -> Route:
        return self._live_route

    def counts(self) -> dict[str, Any]:
        """This process's numbers of the current step (the ``rollout`` operation's ``counts``)."""
        return {
            "candidate": self.candidate.version,
            "step": self.step,
            "live": self.live.state(),
            "cand": self.cand.state(),
            "shadow": self.comparison.state() if self.comparison is not None else None,
        }

    def saved(self) -> dict[str, Any]:
        """What survives a restart."""
        return {
            "serving": self.serving.version,
            "candidate": self.candidate.version,
            "step": self.step,
            "status": self.status,
            "reason": self.reason,
            "gate": self.gate,
            "events": self.events[-50:],
        }


class Rollouts:
    """Every graph's rollout on this process; the core asks ``route`` for each request.

    ``active`` holds the running rollouts only: with none, the core's check is one dict test."""

    def __init__(
        self,
        repository: GraphRepository,
        dispatcher: ShadowDispatcher | None,
        state_dir: Path | None,
        *,
        persist: bool = True,
        on_event: Callable[[str, str, dict[str, Any]], object] | None = None,
    ) -> None:
        self.on_event = on_event  # (event, graph, fields) -> the request log (the persisting process)
        self.repository = repository
        self.dispatcher = dispatcher
        self.state_file = state_dir / STATE_FILE if state_dir is not None else None
        self.persist = persist  # this process writes the state file (one worker of a fleet)
        self.rollouts: dict[str, Rollout] = {}
        self.active: dict[str, Rollout] = {}
        self._saved = self._read()  # graph -> its last rollout; promoted versions go to the repository
        repository.listeners.append(self.on_swap)

    # -- the request path -------------------------------------------------------------------
    def route(
        self, served: ServedGraph, call: InferCall[Any]
    ) -> tuple[Route | None, list[np.ndarray] | None]:
        """The arm of a call that names no version, and its inputs when they had to be decoded for it
        (a sticky rollout, whose inputs and outputs are the same in both versions)."""
        rollout = self.active.get(served.name)
        if rollout is None or rollout.serving is not served:
            return None, None
        if rollout.sticky < 0:
            return rollout.route(call.request_id), None
        plan = served.graph.plan
        try:
            inputs = call.decode(plan.inputs, plan.outputs)
        except Exception:  # the core decodes it again, and refuses and counts it there
            return rollout.live_route, None
        return rollout.route_key(inputs[rollout.sticky], call.request_id), inputs

    # -- following the repository -----------------------------------------------------------
    def on_swap(self, name: str, ready: bool) -> None:
        """A graph's entry changed: start, keep or drop its rollout."""
        try:
            entry = self.repository.entry(name)
        except GraphNotFound:
            entry = None
        current = self.rollouts.get(name)
        if entry is None or entry.unloaded or not entry.candidate:
            self.active.pop(name, None)
            if current is not None and current.status in (RUNNING, PAUSED):
                del self.rollouts[name]  # the candidate is gone: nothing to roll out
            return
        serving, candidate = entry.versions[entry.latest], entry.versions[entry.candidate]
        if current is not None and current.candidate is candidate and current.serving is serving:
            return
        spec = candidate.graph.spec.rollout
        assert spec is not None  # a candidate is a version with a rollout plan
        rollout = Rollout(spec, serving, candidate)
        saved = self._saved.get(name)
        if saved is not None and str(saved.get("candidate")) == candidate.version:
            rollout.step = min(int(saved.get("step", 0)), len(spec.steps) - 1)
            rollout.status = str(saved.get("status", RUNNING))
            rollout.reason = str(saved.get("reason", ""))
            rollout.gate = dict(saved.get("gate") or {})
            rollout.events = list(saved.get("events") or [])
            self._event(rollout, "resumed", f"after a restart, at step {rollout.step + 1}")
        else:
            self._event(rollout, "started", f"serving v{serving.version}, candidate v{candidate.version}")
        rollout.begin_step(self.dispatcher)
        self.rollouts[name] = rollout
        self._activate(rollout)
        self._write()

    def _activate(self, rollout: Rollout) -> None:
        if rollout.status == RUNNING:
            self.active[rollout.graph] = rollout
        else:
            self.active.pop(rollout.graph, None)

    # -- control operations -----------------------------------------------------------------
    def counts(self) -> dict[str, Any]:
        """Every rollout's numbers of its current step (kept as they were once it stopped)."""
        return {graph: r.counts() for graph, r in self.rollouts.items()}

    def apply(self, args: Mapping[str, Any]) -> dict[str, Any]:
        """A transition, the same on every worker: ``{graph, candidate, step, status, event, reason,
        gate}``."""
        graph = str(args["graph"])
        rollout = self.rollouts.get(graph)
        if rollout is None or rollout.candidate.version != str(args["candidate"]):
            return {}
        step, status = int(args["step"]), str(args["status"])
        moved = step != rollout.step  # a new step starts with fresh numbers; a stop keeps the step's
        rollout.step, rollout.status = step, status
        if "reason" in args:
            rollout.reason = str(args["reason"])
            rollout.gate = dict(args.get("gate") or {})
        self._event(rollout, str(args["event"]), str(args.get("reason", "")))
        if moved:
            rollout.begin_step(self.dispatcher)
        self._activate(rollout)
        if status == PROMOTED:
            self.repository.promote(graph, rollout.candidate.version)
        self._write()
        return self.view(graph)

    def view(self, graph: str) -> dict[str, Any]:
        """What ``engine rollout status`` shows of this process's rollout (counts: this process only)."""
        rollout = self.rollouts.get(graph)
        if rollout is None:
            return {}
        spec = rollout.spec
        return {
            "graph": graph,
            "serving": rollout.serving.version,
            "candidate": rollout.candidate.version,
            "status": rollout.status,
            "step": rollout.step + 1,
            "steps": [_step_text(s) for s in spec.steps],
            "weight": rollout.weight,
            "reason": rollout.reason,
            "gate": rollout.gate,
            "events": rollout.events,
        }

    def windows(self) -> dict[str, tuple[str, int]]:
        """graph -> (candidate, step): the window each rollout's numbers are of, here."""
        return {graph: (r.candidate.version, r.step) for graph, r in self.rollouts.items()}

    def require(self, graph: str) -> Rollout:
        rollout = self.rollouts.get(graph)
        if rollout is None:
            raise FailedPrecondition(f"graph '{graph}' has no rollout")
        return rollout

    # -- events and persistence -------------------------------------------------------------
    def _event(self, rollout: Rollout, event: str, detail: str) -> None:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "event": event,
            "step": rollout.step + 1,
            "status": rollout.status,
            "detail": detail,
        }
        rollout.events.append(entry)
        if self.persist and self.on_event is not None:  # one event per transition for the whole server
            fields: dict[str, Any] = {
                "serving": rollout.serving.version,
                "candidate": rollout.candidate.version,
            }
            fields |= {"step": entry["step"], "status": entry["status"], "detail": detail}
            try:
                self.on_event(f"rollout.{event}", rollout.graph, fields)
            except Exception:  # the request log never decides a rollout
                log.exception("rollout event not written to the request log")
        if self.persist:  # one line per transition for the whole server
            log.info(
                "rollout %s v%s -> v%s: %s (step %d, %s)%s",
                rollout.graph,
                rollout.serving.version,
                rollout.candidate.version,
                event,
                rollout.step + 1,
                rollout.status,
                f": {detail}" if detail else "",
            )

    def _read(self) -> dict[str, dict[str, Any]]:
        """The state file: ``{"rollouts": {graph: Rollout.saved()}, "promoted": [[graph, version], ...]}``
        (every version ever promoted: each may be latest, whatever rollouts came after it)."""
        if self.state_file is None or not self.state_file.is_file():
            return {}
        try:
            data = json.loads(self.state_file.read_text())
            rollouts = {str(k): dict(v) for k, v in data.get("rollouts", {}).items()}
            promoted = {(str(g), str(v)) for g, v in data.get("promoted", [])}
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            log.warning("rollout state %s unreadable, starting afresh: %s", self.state_file, exc)
            return {}
        self.repository.promoted |= promoted
        return rollouts

    def _write(self) -> None:
        """Keep every rollout's state (small, written on transitions only); a failure is logged."""
        if self.state_file is None or not self.persist:
            return
        self._saved.update({graph: r.saved() for graph, r in self.rollouts.items()})
        try:
            self.state_file.parent.mkdir(parents=True, exist_ok=True)
            part = self.state_file.with_suffix(".tmp")
            data = {"rollouts": self._saved, "promoted": sorted(self.repository.promoted)}
            part.write_text(json.dumps(data, indent=2, sort_keys=True))
            os.replace(part, self.state_file)
        except OSError as exc:
            log.warning("rollout state not saved to %s: %s", self.state_file, exc)


def _step_text(step: RolloutStep) -> str:
    if step.kind == "promote":
        return "promote"
    bounds = []
    if step.requests:
        bounds.append(f"{step.requests} requests")
    if step.duration_s:
        bounds.append(f"{step.duration_s:g}s")
    head = "shadow" if step.kind == "shadow" else f"canary {step.weight:.0%}"
    return f"{head} {' + '.join(bounds)}"
