"""``decide``: the gates judged from merged numbers, and the merge of every worker's numbers."""

from __future__ import annotations

from engine.errors import Status
from engine.graph.values.spec import RolloutGates, RolloutSpec, RolloutStep
from engine.serving.rollout import ArmCounts
from engine.serving.rollout_gates import Merged, decide, merge_counts

PLAN = RolloutSpec(
    (RolloutStep("canary", 0.5, 400), RolloutStep("canary", 0.9, 400), RolloutStep("promote", 1.0)),
    RolloutGates(max_error_rate_increase=0.01, max_p99_ratio=2.0, min_requests=10),
)


def _arm(requests: int, errors: int = 0, took_us: int = 1000) -> ArmCounts:
    arm = ArmCounts()
    for i in range(requests):
        arm.record(Status.INTERNAL if i < errors else Status.OK, took_us * 1000)
    return arm


def _numbers(live: ArmCounts, cand: ArmCounts) -> Merged:
    return Merged("2", 0, live, cand, None)


def test_no_gate_judges_before_min_requests() -> None:
    assert decide(PLAN, 0, _numbers(_arm(9), _arm(9, errors=9))) is None


def test_an_error_rate_increase_rolls_back_with_both_numbers() -> None:
    decision = decide(PLAN, 0, _numbers(_arm(100, errors=1), _arm(20, errors=2)))
    assert decision is not None
    assert (decision.action, decision.gate, decision.candidate, decision.serving, decision.limit) == (
        "rollback",
        "max_error_rate_increase",
        0.1,
        0.01,
        0.01,
    )


def test_the_p99_gate_waits_for_100_requests_per_arm_and_holds_the_step() -> None:
    slow, fast = _arm(99, took_us=10_000), _arm(500, took_us=1000)
    assert decide(PLAN, 0, _numbers(fast, slow)) is None  # 599 requests >= 400, but p99 not judged yet
    slow.record(Status.OK, 10_000_000)
    decision = decide(PLAN, 0, _numbers(fast, slow))
    assert decision is not None and (decision.action, decision.gate) == ("rollback", "max_p99_ratio")
    assert decision.candidate is not None and decision.serving is not None
    assert decision.candidate / decision.serving > 2.0


def test_a_step_that_passes_advances_and_the_last_one_promotes() -> None:
    good = _numbers(_arm(200), _arm(200))
    first = decide(PLAN, 0, good)
    assert first is not None and first.action == "advance"
    last = decide(PLAN, 1, good)
    assert last is not None and last.action == "promote"


def test_every_workers_numbers_add_up_and_a_worker_on_another_step_is_left_out() -> None:
    part = {
        "g": {
            "candidate": "2",
            "step": 0,
            "live": _arm(5).state(),
            "cand": _arm(3, 1).state(),
            "shadow": None,
        }
    }
    behind = {"g": {**part["g"], "step": 1}}
    merged = merge_counts([behind, part, part], {"g": ("2", 0)})["g"]
    assert (merged.live.requests, merged.cand.requests, merged.cand.errors) == (10, 6, 2)


def test_a_step_with_a_duration_lasts_until_both_its_bounds_are_reached() -> None:
    timed = RolloutSpec(
        (RolloutStep("canary", 0.5, 100, duration_s=60.0), RolloutStep("promote", 1.0)),
        RolloutGates(min_requests=10),
    )
    numbers = _numbers(_arm(200), _arm(200))
    assert decide(timed, 0, numbers, elapsed_s=59.0) is None
    decision = decide(timed, 0, numbers, elapsed_s=60.0)
    assert decision is not None and decision.action == "promote"
