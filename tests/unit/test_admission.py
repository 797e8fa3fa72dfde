"""Admission control: slots, a FIFO queue, a bounded wait, and nothing leaked."""

from __future__ import annotations

import asyncio

import pytest

from engine.errors import Overloaded
from engine.serving.admission import Admission, LoopLagMonitor


async def test_no_limit_admits_everything() -> None:
    admission = Admission()
    for _ in range(100):
        await admission.acquire()
    assert admission.active == 100


async def test_a_full_queue_rejects_at_once_with_a_pushback() -> None:
    admission = Admission(limit=1, max_queue=1, max_wait_s=5)
    await admission.acquire()
    waiting = asyncio.ensure_future(admission.acquire())
    await asyncio.sleep(0)
    with pytest.raises(Overloaded) as info:
        await admission.acquire()
    assert info.value.retry_after_ms >= 10 and admission.rejected["queue_full"] == 1
    admission.release()  # the slot goes straight to the waiter
    await waiting
    assert admission.active == 1 and admission.queued == 0


async def test_waiting_longer_than_max_wait_is_rejected() -> None:
    admission = Admission(limit=1, max_queue=4, max_wait_s=0.02)
    await admission.acquire()
    with pytest.raises(Overloaded, match="waited 20 ms"):
        await admission.acquire()
    assert admission.rejected["queue_wait"] == 1 and admission.queued == 0


async def test_the_wait_is_bounded_by_the_callers_deadline() -> None:
    admission = Admission(limit=1, max_queue=4, max_wait_s=10)
    await admission.acquire()
    with pytest.raises(Overloaded, match="waited 10 ms"):
        await admission.acquire(remaining_s=0.01)


async def test_waiters_are_served_in_order() -> None:
    admission = Admission(limit=1, max_queue=3, max_wait_s=5)
    await admission.acquire()
    order: list[int] = []

    async def call(i: int) -> None:
        await admission.acquire()
        order.append(i)

    tasks = [asyncio.ensure_future(call(i)) for i in range(3)]
    await asyncio.sleep(0)
    for _ in range(3):
        admission.release()
        await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2]


async def test_a_cancelled_waiter_leaks_no_slot() -> None:
    admission = Admission(limit=1, max_queue=2, max_wait_s=5)
    await admission.acquire()
    first = asyncio.ensure_future(admission.acquire())
    second = asyncio.ensure_future(admission.acquire())
    await asyncio.sleep(0)
    admission.release()  # handed to `first` ...
    first.cancel()  # ... which goes away before running: the slot must move on to `second`
    await asyncio.sleep(0)
    await second
    assert admission.active == 1
    admission.release()
    assert admission.active == 0 and admission.queued == 0


async def test_a_lagging_event_loop_sheds_new_calls() -> None:
    from engine.serving.admission import LoopLagMonitor

    admission = Admission(limit=8, max_queue=8, max_wait_s=0.02)
    monitor = LoopLagMonitor(admission, interval_s=0.005)
    monitor.start()
    await asyncio.sleep(0.02)
    import time

    time.sleep(0.08)  # noqa: ASYNC251 - on purpose: a handler that never yields, the loop falls behind
    await asyncio.sleep(0.006)
    assert admission.loop_lag_s > 0.02
    with pytest.raises(Overloaded, match="event loop"):
        await admission.acquire()
    assert admission.rejected["loop_lag"] == 1
    # The lag decays once the loop keeps up (halved every tick: about 0.1 s on an idle machine;
    # a busy one can make a tick late again, so the test waits for it rather than timing it).
    deadline = asyncio.get_running_loop().time() + 10
    while admission.loop_lag_s >= 0.02 and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    monitor.stop()
    assert admission.loop_lag_s < 0.02
    await admission.acquire()


async def test_the_lag_monitor_reports_live_pressure_to_shadows() -> None:
    admission = Admission(limit=1, max_queue=4, max_wait_s=1.0)
    told: list[bool] = []
    monitor = LoopLagMonitor(admission, interval_s=0.001, on_pressure=told.append)
    monitor.start()
    try:
        await admission.acquire()  # the one slot: live calls now have to wait
        for _ in range(2000):  # generous: a loaded machine delays the monitor
            if told:
                break
            await asyncio.sleep(0.002)
        assert told == [True]
        admission.release()
        for _ in range(2000):  # generous: a loaded machine delays the monitor
            if len(told) == 2:
                break
            await asyncio.sleep(0.002)
        assert told == [True, False]
    finally:
        monitor.stop()
