"""``ShadowPool``: sampled, bounded, shed first, drained on shutdown; a bad shadow is counted, never raised.

No timed assertions: slow and hanging shadows are driven by events, and the only
waits are generous upper bounds.
"""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest

from engine.shadow.compare import ShadowComparison, ShadowConfig
from engine.shadow.outcome import RequestShadows, ShadowOutcome, shadow_field
from engine.shadow.report import ShadowCounters
from engine.shadow.rules import CompareRule
from engine.shadow.runner import LiveResult, ShadowPool, ShadowRun

LIVE = LiveResult({"prob": np.array([[0.5], [0.25]])}, 1_000_000)


def _comparison(sample: float = 1.0, timeout_s: float = 30.0) -> ShadowComparison:
    rules = {"prob": CompareRule(abs_tol=0.05)}
    return ShadowComparison(ShadowConfig("fraud", "v2", "deep", rules, sample=sample, timeout_s=timeout_s))


async def _answer() -> ShadowRun:
    return ShadowRun({"prob": np.array([[0.52], [0.5]])}, 2_000_000)


async def _idle(pool: ShadowPool) -> None:
    async with asyncio.timeout(30):
        while pool.in_flight or pool.queued:  # noqa: ASYNC110 - polling the pool's own state
            await asyncio.sleep(0.001)


class Gate:
    """Work that waits until released (a slow shadow), counting how many started."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.started = 0

    async def __call__(self) -> ShadowRun:
        self.started += 1
        await self.release.wait()
        return await _answer()


async def test_a_shadow_is_run_and_compared() -> None:
    pool, c, results = ShadowPool(), _comparison(), RequestShadows()
    assert pool.submit(c, _answer, live=LIVE, request_id="r1", results=results)
    outcomes = await results.settled(30)
    assert c.counters() == ShadowCounters(sampled=1, run=1)
    out = c.snapshot().outputs["prob"]
    assert (out.rows, out.agree) == (2, 1)  # .52 vs .5 within .05; .5 vs .25 not
    assert outcomes["v2"].status == "ok" and outcomes["v2"].verdicts["prob"].agree == 1
    assert results.disagreed


async def test_the_live_side_may_arrive_later() -> None:
    pool, c, results = ShadowPool(), _comparison(), RequestShadows()
    live: asyncio.Future[LiveResult | None] = asyncio.get_running_loop().create_future()
    assert pool.submit(c, _answer, live=live, results=results)
    await asyncio.sleep(0)
    live.set_result(LIVE)
    await results.settled(30)
    assert c.counters().run == 1


async def test_a_failed_live_target_leaves_nothing_to_compare() -> None:
    pool, c = ShadowPool(), _comparison()
    loop = asyncio.get_running_loop()
    failed: asyncio.Future[LiveResult | None] = loop.create_future()
    cancelled: asyncio.Future[LiveResult | None] = loop.create_future()
    pool.submit(c, _answer, live=failed)
    pool.submit(c, _answer, live=cancelled)
    failed.set_result(None)
    cancelled.cancel()
    await _idle(pool)
    assert c.counters() == ShadowCounters(sampled=2, no_live=2)


async def test_a_shadow_that_raises_is_counted_never_raised() -> None:
    async def broken() -> ShadowRun:
        raise RuntimeError("candidate exploded")

    pool, c, results = ShadowPool(), _comparison(), RequestShadows()
    assert pool.submit(c, broken, live=LIVE, results=results) is True
    outcomes = await results.settled(30)
    assert c.counters() == ShadowCounters(sampled=1, errors=1)
    assert outcomes["v2"].status == "error" and outcomes["v2"].error == "RuntimeError: candidate exploded"
    assert c.snapshot().last_error == "RuntimeError: candidate exploded"


async def test_a_hanging_shadow_times_out_and_is_counted() -> None:
    async def hangs() -> ShadowRun:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    pool, c, results = ShadowPool(), _comparison(timeout_s=0.01), RequestShadows()
    pool.submit(c, hangs, live=LIVE, results=results)
    outcomes = await results.settled(30)
    assert c.counters() == ShadowCounters(sampled=1, timeouts=1)
    assert outcomes["v2"].status == "timeout"


async def test_a_slow_shadow_does_not_hold_up_the_caller() -> None:
    gate, pool, c = Gate(), ShadowPool(), _comparison()
    for _ in range(3):
        assert pool.submit(c, gate, live=LIVE)  # returns at once; the work has not even started
    assert gate.started == 0 and c.counters() == ShadowCounters()
    await asyncio.sleep(0)
    assert gate.started == 3
    gate.release.set()
    await _idle(pool)
    assert c.counters().run == 3


async def test_a_full_queue_sheds_and_counts() -> None:
    gate, pool, c = Gate(), ShadowPool(concurrency=1, queue_size=2), _comparison()
    results = [RequestShadows() for _ in range(5)]
    admitted = [pool.submit(c, gate, live=LIVE, results=r) for r in results]
    assert admitted == [True, True, True, False, False]
    assert (pool.in_flight, pool.queued) == (1, 2)
    assert results[4].outcomes["v2"].status == "shed" and results[4].pending == 0
    gate.release.set()
    await _idle(pool)
    assert c.counters() == ShadowCounters(sampled=5, run=3, shed=2)


async def test_pressure_sheds_queued_and_new_shadows_first() -> None:
    gate, pool, c = Gate(), ShadowPool(concurrency=1, queue_size=10), _comparison()
    for _ in range(4):
        pool.submit(c, gate, live=LIVE)
    pool.pressure(True)
    assert pool.queued == 0
    assert pool.submit(c, gate, live=LIVE) is False
    pool.pressure(False)
    assert pool.submit(c, gate, live=LIVE) is True
    gate.release.set()
    await _idle(pool)
    assert c.counters() == ShadowCounters(sampled=6, run=2, shed=4)


async def test_drain_finishes_quick_work_and_cancels_the_rest() -> None:
    gate, pool, c = Gate(), ShadowPool(concurrency=3, queue_size=10), _comparison()
    live: asyncio.Future[LiveResult | None] = asyncio.get_running_loop().create_future()
    pool.submit(c, _answer, live=LIVE)  # finishes within the grace period
    pool.submit(c, _answer, live=live)  # waits for a live side that never comes
    pool.submit(c, gate, live=LIVE)  # hangs
    for _ in range(4):
        pool.submit(c, gate, live=LIVE)  # queued
    await pool.drain(grace_s=0.05)
    assert pool.in_flight == 0 and pool.queued == 0
    assert c.counters() == ShadowCounters(sampled=7, run=1, cancelled=6)
    assert not live.cancelled()  # the executor's future is never cancelled by the pool
    assert pool.submit(c, _answer, live=LIVE) is False  # closed: shed
    assert c.counters().shed == 1


@pytest.mark.parametrize("sampling", ["random", "request_id"])
async def test_sampling_rate_is_within_five_sigma(sampling: str) -> None:
    n, p = 20_000, 0.3
    pool = ShadowPool(concurrency=64, queue_size=n, sampling=sampling, seed=11)
    c = _comparison(sample=p)
    admitted = sum(pool.submit(c, _answer, live=LIVE, request_id=f"req-{i}") for i in range(n))
    sigma = math.sqrt(n * p * (1 - p))
    assert abs(admitted - n * p) < 5 * sigma
    await _idle(pool)
    counters = c.counters()
    assert (counters.sampled, counters.skipped, counters.run) == (admitted, n - admitted, admitted)


def test_request_id_sampling_is_deterministic_and_nested() -> None:
    a, b = ShadowPool(sampling="request_id"), ShadowPool(sampling="request_id", seed=99)
    ids = [f"id-{i}" for i in range(2000)]
    half = {i for i in ids if a.sampled(0.5, i)}
    assert half == {i for i in ids if b.sampled(0.5, i)}
    tenth = {i for i in ids if a.sampled(0.1, i)}
    assert tenth <= half and 0 < len(tenth) < len(half)
    assert a.sampled(1.0, "x") and not a.sampled(0.0, "x")


def test_a_seeded_pool_draws_the_same_samples() -> None:
    draws = [[ShadowPool(seed=5).sampled(0.5) for _ in range(50)] for _ in range(2)]
    assert draws[0] == draws[1]


async def test_a_results_collector_that_raises_is_counted_not_raised() -> None:
    class Broken(RequestShadows):
        def settle(self, outcome: ShadowOutcome, was_pending: bool = True) -> None:
            if was_pending:
                raise ValueError("collector bug")
            super().settle(outcome, was_pending)

    pool, c = ShadowPool(), _comparison()
    assert pool.submit(c, _answer, live=LIVE, results=Broken())
    await _idle(pool)
    assert pool.internal_errors == 1 and c.counters().run == 1


async def test_settled_waits_only_as_long_as_the_bound() -> None:
    gate, pool, c, results = Gate(), ShadowPool(), _comparison(), RequestShadows()
    pool.submit(c, gate, live=LIVE, results=results)
    early = await results.settled(0.01)  # still running: written as unsettled, nothing else
    assert {n: (o.target, o.status) for n, o in early.items()} == {"v2": ("deep", "unsettled")}
    assert shadow_field(early, lambda path, a: {}) == {"v2": {"target": "deep", "status": "unsettled"}}
    assert c.counters().unsettled == 0  # the live counters wait for the real outcome
    gate.release.set()
    assert (await results.settled(30))["v2"].status == "ok"
    assert results.pending == 0 and c.counters().run == 1


async def test_the_record_field_layout() -> None:
    pool, c, results = ShadowPool(), _comparison(), RequestShadows()
    skipper = ShadowComparison(ShadowConfig("fraud", "v3", "deep", sample=0.0))
    pool.submit(c, _answer, live=LIVE, results=results)
    pool.submit(skipper, _answer, live=LIVE, results=results)
    outcomes = await results.settled(30)

    def tensor(path: str, array: np.ndarray) -> dict[str, object]:
        return {"path": path, "data": array.tolist()}

    assert shadow_field(outcomes, tensor) == {
        "v2": {
            "target": "deep",
            "status": "ok",
            "duration_us": 2000,
            "live_duration_us": 1000,
            "compare": {"prob": {"kind": "numeric", "abs_tol": 0.05, "rel_tol": 0.0}},
            "outputs": {"prob": {"path": "shadow.v2.outputs.prob", "data": [[0.52], [0.5]]}},
            "live": {"prob": {"path": "shadow.v2.live.prob", "data": [[0.5], [0.25]]}},
            "agree": {"prob": {"rows": 2, "agree": 1}},
        },
        "v3": {"target": "deep", "status": "skipped"},
    }
    assert "live" not in shadow_field(outcomes, tensor, include_live=False)["v2"]


async def test_a_candidate_failing_in_a_row_is_only_probed_until_it_recovers() -> None:
    from engine.shadow.runner import BREAK_AFTER, PROBE_SHARE

    pool, c = ShadowPool(queue_size=1000, seed=3), _comparison()
    broken = True

    async def work() -> ShadowRun:
        if broken:
            raise RuntimeError("candidate is broken")
        return await _answer()

    for _ in range(BREAK_AFTER):
        pool.submit(c, work, live=LIVE)
        await _idle(pool)
    assert c.counters().errors == BREAK_AFTER and c.failing == BREAK_AFTER
    n = 2000
    for _ in range(n):
        pool.submit(c, work, live=LIVE)
    await _idle(pool)
    counters = c.counters()
    probed = counters.errors - BREAK_AFTER
    assert counters.shed + probed == n  # the rest are shed, and counted
    expected, sd = n * PROBE_SHARE, math.sqrt(n * PROBE_SHARE * (1 - PROBE_SHARE))
    assert abs(probed - expected) < 5 * sd  # about one in 1 / PROBE_SHARE still runs
    broken = False
    while c.counters().run == 0:  # a probe that succeeds ends the back-off
        pool.submit(c, work, live=LIVE)
        await _idle(pool)
    assert c.failing == 0
    before = c.counters().run
    for _ in range(10):
        pool.submit(c, work, live=LIVE)
    await _idle(pool)
    assert c.counters().run == before + 10
