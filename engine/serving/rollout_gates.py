"""Rollout gates: every worker's numbers of a step merged, judged (``decide``), and the transitions
that carry a decision or an operator's action to every worker (``apply`` arguments).

Plain functions over plain numbers; ``engine.serving.rollout_driver`` and ``ServerAdmin`` call them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from engine.errors import FailedPrecondition
from engine.graph.values.spec import RolloutSpec
from engine.serving.rollout import PAUSED, PROMOTED, ROLLED_BACK, RUNNING, ArmCounts, Rollout
from engine.shadow.compare import ShadowComparison, ShadowConfig
from engine.shadow.report import ShadowSummary

P99_MIN_REQUESTS = 100
"""Requests each arm needs in a step before their p99s are compared (the p99 of 100 is the second slowest)."""


@dataclass(frozen=True, slots=True)
class Decision:
    """A transition ``decide`` asks for: ``advance`` (to the next step), ``promote`` or ``rollback``."""

    action: str
    reason: str = ""
    gate: str = ""
    candidate: float | None = None  # the candidate's number the gate judged
    serving: float | None = None  # the serving version's, over the same window (None: not compared)
    limit: float | None = None  # the gate's bound


@dataclass(slots=True)
class Merged:
    """One rollout's numbers summed over the workers."""

    candidate: str
    step: int
    live: ArmCounts
    cand: ArmCounts
    shadow: ShadowSummary | None


def merge_counts(
    parts: list[Mapping[str, Any]], windows: Mapping[str, tuple[str, int]] | None = None
) -> dict[str, Merged]:
    """Every worker's ``counts`` answer -> graph -> the numbers of all of them.

    ``windows`` (graph -> candidate and step, as this process has them) keeps out a worker still
    on another step (a transition reaching it); without, the first answer's step is the window."""
    merged: dict[str, Merged] = {}
    comparisons: dict[str, ShadowComparison] = {}
    for part in parts:
        for graph, data in part.items():
            if windows is not None and windows.get(graph) != (str(data["candidate"]), int(data["step"])):
                continue
            m = merged.get(graph)
            if m is None:
                m = merged[graph] = Merged(
                    str(data["candidate"]), int(data["step"]), ArmCounts(), ArmCounts(), None
                )
            elif (m.candidate, m.step) != (str(data["candidate"]), int(data["step"])):
                continue  # a worker still on another step: its numbers are not this window's
            m.live.absorb(data["live"])
            m.cand.absorb(data["cand"])
            if data.get("shadow") is not None:
                state = data["shadow"]
                comparison = comparisons.get(graph)
                if comparison is None:
                    config = ShadowConfig(graph=str(state["graph"]), shadow=str(state["shadow"]))
                    comparison = comparisons[graph] = ShadowComparison(config)
                comparison.absorb(state)
    for graph, comparison in comparisons.items():
        merged[graph].shadow = comparison.snapshot()
    return merged


def decide(spec: RolloutSpec, step: int, numbers: Merged, elapsed_s: float = 0.0) -> Decision | None:
    """What the gates say about the current step, from the numbers of every worker; None: keep going.

    ``elapsed_s``: how long the step has run (on the deciding process), for steps with a
    ``duration``. No gate judges before the candidate has ``min_requests`` requests in the step (shadow step:
    settled shadow runs). Latency is judged on served traffic only (canary steps): shadow runs
    are shed first and run at idle priority, so their timings do not compare. The p99 gate judges
    once each arm has ``P99_MIN_REQUESTS`` requests in the step (fewer, and a p99 is the single
    slowest request); a canary step is not passed before it has."""
    current = spec.steps[step]
    gates = spec.gates
    live = numbers.live
    if current.kind == "shadow":
        summary = numbers.shadow
        counters = summary.counters if summary is not None else None
        errors = (counters.errors + counters.timeouts) if counters is not None else 0
        n = (counters.run + errors) if counters is not None else 0
        done = n >= current.requests
    else:
        summary = None
        n, errors = numbers.cand.requests, numbers.cand.errors
        done = live.requests + numbers.cand.requests >= current.requests
    done = done and elapsed_s >= current.duration_s  # a step with both bounds lasts until both are reached
    if n < gates.min_requests:
        return None
    if gates.max_error_rate_increase is not None:
        rate, base = errors / n, live.error_rate
        if rate - base > gates.max_error_rate_increase + 1e-12:
            return Decision(
                "rollback",
                f"max_error_rate_increase: candidate error rate {rate:.4f} - serving {base:.4f} = "
                f"{rate - base:.4f} > {gates.max_error_rate_increase:g}",
                "max_error_rate_increase",
                rate,
                base,
                gates.max_error_rate_increase,
            )
    if gates.max_p99_ratio is not None and current.kind == "canary" and current.weight < 1.0:
        mine, theirs = numbers.cand.p99(), live.p99()
        if min(numbers.cand.requests, live.requests) < P99_MIN_REQUESTS:
            done = False  # a step passes only once its latency could be judged
        elif mine is not None and theirs is not None and theirs > 0 and mine / theirs > gates.max_p99_ratio:
            return Decision(
                "rollback",
                f"max_p99_ratio: candidate p99 {mine / 1000:.2f} ms / serving p99 {theirs / 1000:.2f} ms = "
                f"{mine / theirs:.2f} > {gates.max_p99_ratio:g}",
                "max_p99_ratio",
                mine / 1000,
                theirs / 1000,
                gates.max_p99_ratio,
            )
    if current.kind == "shadow" and summary is not None:
        for output, share in gates.min_agreement.items():
            report = summary.outputs.get(output)
            agreement = report.agreement if report is not None else None
            if agreement is not None and agreement < share:
                return Decision(
                    "rollback",
                    f"min_agreement: output {output} agrees on {agreement:.4f} of rows "
                    f"({report.agree if report else 0}/{report.rows if report else 0}) < {share:g}",
                    f"min_agreement.{output}",
                    agreement,
                    None,
                    share,
                )
    if not done:
        return None
    following = spec.steps[step + 1] if step + 1 < len(spec.steps) else None
    if following is None or following.kind == "promote":
        return Decision("promote", "every step passed its gates")
    return Decision("advance", f"step {step + 1} ({current.kind}) passed its gates")


def transition(rollout: Rollout, decision: Decision) -> dict[str, Any]:
    """The ``apply`` arguments that carry ``decision`` to every worker."""
    args: dict[str, Any] = {"graph": rollout.graph, "candidate": rollout.candidate.version}
    if decision.action == "advance":
        return {**args, "step": rollout.step + 1, "status": RUNNING, "event": "advanced", "reason": ""}
    gate = {
        "gate": decision.gate,
        "candidate": decision.candidate,
        "serving": decision.serving,
        "limit": decision.limit,
    }
    status = PROMOTED if decision.action == "promote" else ROLLED_BACK
    event = "promoted" if decision.action == "promote" else "rolled_back"
    return {
        **args,
        "step": rollout.step,
        "status": status,
        "event": event,
        "reason": decision.reason,
        "gate": gate,
    }


OPERATOR_ACTIONS = {  # action -> (the states it applies to, the state it leads to, event)
    "pause": ((RUNNING,), PAUSED, "paused"),
    "resume": ((PAUSED,), RUNNING, "resumed"),
    "promote": ((RUNNING, PAUSED), PROMOTED, "promoted"),
    "abort": ((RUNNING, PAUSED), ROLLED_BACK, "rolled_back"),
}


def operator_transition(rollout: Rollout, action: str) -> dict[str, Any]:
    """The ``apply`` arguments of an operator's ``engine rollout ACTION``; FailedPrecondition when
    the rollout's state does not allow it."""
    allowed, status, event = OPERATOR_ACTIONS[action]
    if rollout.status not in allowed:
        raise FailedPrecondition(
            f"rollout of graph '{rollout.graph}' is {rollout.status}; "
            f"'{action}' needs it {' or '.join(allowed)}"
        )
    args: dict[str, Any] = {
        "graph": rollout.graph,
        "candidate": rollout.candidate.version,
        "step": rollout.step,
        "status": status,
        "event": event,
    }
    if action in ("promote", "abort"):
        args["reason"] = f"{action} by an operator"
        args["gate"] = {}
    return args
