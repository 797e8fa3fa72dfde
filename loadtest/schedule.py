"""The arrival schedule: every request's intended send time, decided before the run starts.

A schedule is the whole open-loop contract: the generator sends request *i* at
``start + offsets_ns[i]`` whatever happened to earlier requests, and latency is
measured from that intended time, so a stalled server cannot slow the load down
and hide its own queueing delay (coordinated omission).

Rates vary piecewise-linearly over the stages (a warm-up runs first at the
first stage's starting rate). Arrivals are drawn on the *cumulative* rate
Λ(t) = ∫ λ and mapped to time through Λ⁻¹. Uniform arrivals are evenly spaced on
that axis (exact spacing at a constant rate). Poisson arrivals are round(Λ(end))
points drawn uniformly on it and sorted: a (non-homogeneous, for ramps) Poisson
process conditioned on its expected count, so the run sends exactly the number
of requests its profile implies while gaps stay exponential.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from loadtest.sla import Load, Stage


@dataclass(frozen=True)
class Schedule:
    offsets_ns: np.ndarray  # int64, sorted, from the run's start (warm-up included)
    warmup_ns: int  # measurement starts at this offset
    stages: tuple[Stage, ...]  # warm-up first when there is one
    stage_starts_s: tuple[float, ...]

    @property
    def duration_s(self) -> float:
        return sum(s.duration_s for s in self.stages)

    @property
    def measured_count(self) -> int:
        return int(np.count_nonzero(self.offsets_ns >= self.warmup_ns))

    def rate_at(self, t_s: float) -> float:
        """The nominal target rate at ``t_s`` seconds from the start."""
        for start, stage in zip(self.stage_starts_s, self.stages, strict=True):
            if t_s < start + stage.duration_s:
                frac = (t_s - start) / stage.duration_s
                return stage.start_rate + (stage.end_rate - stage.start_rate) * max(0.0, frac)
        return 0.0

    def split(self, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Round-robin the arrivals over ``n`` processes: (global indices, offsets) each."""
        index = np.arange(len(self.offsets_ns), dtype=np.int64)
        return [(index[i::n], self.offsets_ns[i::n]) for i in range(n)]


def build_schedule(load: Load) -> Schedule:
    stages = list(load.stages)
    if load.warmup_s > 0:
        stages.insert(0, Stage(stages[0].start_rate, stages[0].start_rate, load.warmup_s))
    starts = np.concatenate([[0.0], np.cumsum([s.duration_s for s in stages])])
    # cumulative expected arrivals at each stage boundary (trapezoid: rates are linear within a stage)
    areas = np.array([(s.start_rate + s.end_rate) / 2 * s.duration_s for s in stages])
    cumulative = np.concatenate([[0.0], np.cumsum(areas)])
    total = cumulative[-1]
    rng = np.random.default_rng(load.seed)
    if load.arrivals == "poisson":
        # a Poisson process conditioned on its expected count: that many points uniform on the
        # cumulative-rate axis, sorted (so the run sends exactly the requests its profile implies)
        units_ = np.sort(rng.uniform(0.0, total, size=round(total)))
    else:
        units_ = np.arange(0.5, total, 1.0)  # evenly spaced; centred so a 1-request stage sends mid-way
    times = _invert(units_, stages, starts, cumulative)
    return Schedule(
        offsets_ns=np.round(times * 1e9).astype(np.int64),
        warmup_ns=round(load.warmup_s * 1e9),
        stages=tuple(stages),
        stage_starts_s=tuple(float(s) for s in starts[:-1]),
    )


def _invert(
    units_: np.ndarray, stages: list[Stage], starts: np.ndarray, cumulative: np.ndarray
) -> np.ndarray:
    """Λ⁻¹: cumulative expected arrivals → time, solving the quadratic within each stage."""
    which = np.clip(np.searchsorted(cumulative, units_, side="right") - 1, 0, len(stages) - 1)
    times = np.empty_like(units_)
    for k, stage in enumerate(stages):
        mask = which == k
        if not mask.any():
            continue
        a = units_[mask] - cumulative[k]  # arrivals into this stage
        r0, r1, d = stage.start_rate, stage.end_rate, stage.duration_s
        slope = (r1 - r0) / d
        if abs(slope) < 1e-12:
            local = a / r0
        else:  # a = r0·t + slope·t²/2  →  t = (-r0 + √(r0² + 2·slope·a)) / slope
            local = (-r0 + np.sqrt(np.maximum(r0 * r0 + 2 * slope * a, 0.0))) / slope
        times[mask] = starts[k] + np.clip(local, 0.0, d)
    return times
