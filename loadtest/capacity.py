"""``loadtest capacity``: the highest constant rate that still meets every assertion.

Each step is a short run at one constant rate (``capacity.warmup`` then
``capacity.step``), judged by the SLA's assertions with ``min_rate`` replaced by
``capacity.min_rate`` (default 95 %) of the step's own rate — an open-loop
server that cannot keep up shows it as falling throughput and growing latency.

The search doubles from ``capacity.start`` until a step fails (or ``capacity.max``
passes), then bisects between the last pass and the first fail until they are
within ``capacity.precision`` of each other or ``capacity.max_steps`` is spent.
If the first step fails it halves downwards instead. A step in which the
generator itself fell behind counts as failing (the load was not applied), and
the report says the capacity found may be the generator's, not the server's.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from loadtest import histograms
from loadtest.checks import Check, evaluate_checks
from loadtest.progress import Progress
from loadtest.runner import Prepared, RunResult, run_load
from loadtest.sla import Load, Stage


@dataclass
class Step:
    rate: float
    result: RunResult
    checks: list[Check]

    @property
    def passed(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def generator_bound(self) -> bool:
        return not next(c for c in self.checks if c.name == "generator").ok

    def to_json(self) -> dict[str, Any]:
        requests = self.result.requests
        return {
            "rate": self.rate,
            "verdict": "pass" if self.passed else "fail",
            "achieved_rate": self.result.completed_ok_in_period / self.result.duration_s,
            "p99_us": histograms.percentile(self.result.ok, 99.0),
            "error_rate": self.result.errors / requests if requests else 0.0,
            "broken": [c.message for c in self.checks if not c.ok],
        }


@dataclass
class CapacityResult:
    steps: list[Step]
    best: Step | None
    note: str

    def to_json(self) -> dict[str, Any]:
        return {
            "capacity_rate": self.best.rate if self.best else None,
            "steps": [s.to_json() for s in self.steps],
            "note": self.note,
        }


def step_load(prepared: Prepared, rate: float) -> Load:
    cap, load = prepared.sla.capacity, prepared.sla.load
    return replace(load, stages=(Stage(rate, rate, cap.step_s),), warmup_s=cap.warmup_s)


def search(prepared: Prepared, progress: bool = True) -> CapacityResult:
    sla = prepared.sla
    cap = sla.capacity
    steps: list[Step] = []

    def run(rate: float) -> Step:
        load = step_load(prepared, rate)
        assertions = replace(sla.assertions, min_rate=rate * cap.min_rate_fraction)
        label = f"step {len(steps) + 1} @ {rate:.0f}/s "
        result = run_load(prepared, load, Progress(label=label) if progress else None)
        step = Step(rate, result, evaluate_checks(assertions, load, result))
        steps.append(step)
        return step

    lo: Step | None = None
    hi: Step | None = None
    rate = cap.start
    note = ""
    generator_limited: list[float] = []
    while len(steps) < cap.max_steps:
        step = run(rate)
        if step.generator_bound:
            generator_limited.append(rate)
        if step.passed:
            lo = step
            if hi is None:
                if rate >= cap.max:
                    note = f"Every rate up to capacity.max ({cap.max:g}/s) passed."
                    break
                rate = min(rate * 2, cap.max)
                continue
        else:
            hi = step
            if lo is None:
                rate = rate / 2
                if rate < cap.start / 64:
                    note = "Even a rate 64 times below capacity.start failed the assertions."
                    break
                continue
        if lo is not None and hi is not None:
            if (hi.rate - lo.rate) / lo.rate <= cap.precision:
                break
            rate = (lo.rate + hi.rate) / 2
    else:
        note = f"Stopped after capacity.max_steps ({cap.max_steps}) steps"
        note += (
            f"; capacity lies between {lo.rate:.0f}/s and {hi.rate:.0f}/s."
            if lo and hi
            else f" without a failing step: capacity is at least {lo.rate:.0f}/s."
            if lo
            else "."
        )
    if lo is not None and hi is not None and not note:
        note = (
            f"Capacity lies between {lo.rate:.0f}/s (passed) and {hi.rate:.0f}/s (failed); "
            f"steps of {cap.step_s:g} s after {cap.warmup_s:g} s warm-up."
        )
    if generator_limited:
        note += (
            " The generator could not keep the schedule at "
            + ", ".join(f"{r:.0f}/s" for r in generator_limited)
            + " (counted as failing steps): the server's capacity may be higher than found. Raise "
            "load.processes, or generate from another machine so the generator does not share "
            "the server's CPU."
        )
    return CapacityResult(steps, lo, note.strip())
