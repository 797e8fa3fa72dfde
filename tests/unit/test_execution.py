"""The executor against hand-built plans and fake models: no YAML, no gRPC."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from engine.errors import DeadlineExceeded, InternalError, InvalidRequest
from engine.execution import PlanRunner
from engine.graph.values.plan import Branch, FunctionStep, ModelStep, Plan, RouteStep
from engine.interfaces import ModelSignature
from tests.fakes import FakeModel, RecordingObserver, linear_model, spec


def _plan(stages, n_slots, outputs, slot_names=None, inputs=None, batch_inputs=(0,)) -> Plan:
    inputs = inputs or (spec("a", shape=(-1, 1)),)
    return Plan(
        graph="g",
        version="1",
        inputs=inputs,
        outputs=tuple(spec(f"out{i}") for i in range(len(outputs))),
        output_slots=tuple(outputs),
        stages=tuple(tuple(s) for s in stages),
        n_slots=n_slots,
        slot_names=tuple(slot_names or [f"s{i}" for i in range(n_slots)]),
        batch_inputs=batch_inputs,
        nodes=(),
    )


def _add_one(arrays):
    return (arrays[0] + np.float32(1),)


def _model_step(name, model, i, o, timeout=None):
    return ModelStep(name, model, (i,), (o,), ("y",), timeout_s=timeout)


async def test_chain_of_function_and_model_steps():
    m = linear_model(scale=3.0)
    plan = _plan(
        [
            [FunctionStep("t", "transform", "expr", _add_one, (0,), (1,), ("output",))],
            [_model_step("m", m, 1, 2)],
        ],
        3,
        [2],
    )
    runner = PlanRunner(plan)
    (out,) = await runner.run([np.array([[1.0], [2.0]], dtype=np.float32)])
    np.testing.assert_allclose(out, [[6.0], [9.0]])
    assert runner.stats.nodes["m"].success.count == 1
    assert runner.stats.nodes["m"].rows == 2


async def test_fan_out_runs_waiting_steps_concurrently():
    both_started = asyncio.Barrier(2)

    class Meeting(FakeModel):
        """Returns only once the other model has started too: run one after the other, it hangs."""

        async def run(self, inputs):  # type: ignore[no-untyped-def]
            await both_started.wait()
            return await super().run(inputs)

    template = linear_model()
    slow_a, slow_b = (Meeting(template.signature, template.fn) for _ in range(2))
    plan = _plan([[_model_step("a", slow_a, 0, 1), _model_step("b", slow_b, 0, 2)]], 3, [1, 2])
    async with asyncio.timeout(30):
        a, b = await PlanRunner(plan).run([np.ones((1, 1), np.float32)])
    np.testing.assert_allclose(a, b)


async def test_failed_sibling_cancels_the_other():
    slow = linear_model()
    slow.delay_s = 5
    broken = FakeModel(signature=slow.signature, fn=lambda x: 1 / 0)
    broken.delay_s = 0.01
    plan = _plan([[_model_step("slow", slow, 0, 1), _model_step("broken", broken, 0, 2)]], 3, [1, 2])
    with pytest.raises(InternalError) as info:
        await asyncio.wait_for(PlanRunner(plan).run([np.ones((1, 1), np.float32)]), 2)
    assert info.value.node == "broken"


async def test_node_timeout_names_the_node():
    slow = linear_model()
    slow.delay_s = 1
    plan = _plan([[_model_step("slow", slow, 0, 1, timeout=0.05)]], 2, [1])
    with pytest.raises(DeadlineExceeded, match="node 'slow' exceeded its timeout of 50 ms"):
        await PlanRunner(plan).run([np.ones((1, 1), np.float32)])


async def test_no_node_starts_after_the_deadline():
    first, second = linear_model(), linear_model()
    first.delay_s = 0.1
    plan = _plan([[_model_step("first", first, 0, 1)], [_model_step("second", second, 1, 2)]], 3, [2])
    with pytest.raises(DeadlineExceeded) as info:
        await PlanRunner(plan).run([np.ones((1, 1), np.float32)], deadline=time.monotonic() + 0.05)
    assert info.value.node == "first"
    assert second.calls == 0


async def test_engine_errors_are_attributed_to_their_node():
    def bad(arrays):
        raise InvalidRequest("value out of range")

    plan = _plan([[FunctionStep("check", "transform", "expr", bad, (0,), (1,), ("output",))]], 2, [1])
    with pytest.raises(InvalidRequest, match="node 'check': value out of range"):
        await PlanRunner(plan).run([np.ones((1, 1), np.float32)])


async def test_inputs_must_agree_on_batch_size():
    inputs = (spec("a"), spec("b"))
    plan = _plan([], 2, [0, 1], slot_names=["inputs.a", "inputs.b"], inputs=inputs, batch_inputs=(0, 1))
    with pytest.raises(InvalidRequest, match=r"'inputs\.a' has 2 rows, 'inputs\.b' has 3"):
        await PlanRunner(plan).run([np.ones((2, 1), np.float32), np.ones((3, 1), np.float32)])


def _switch_plan(big: FakeModel, small: FakeModel) -> Plan:
    # slot 0: input, 1: big.y, 2: small.y, 3: route.y
    route = RouteStep(
        name="route",
        kind="switch",
        router=lambda arrays: np.where(arrays[0][:, 0] > 10, 0, 1).astype(np.intp),
        inputs=(0,),
        branches=(
            Branch("big", (_model_step("big", big, 0, 1),), (0,), (1,)),
            Branch("small", (_model_step("small", small, 0, 2),), (0,), (2,)),
        ),
        outputs=(3,),
        output_names=("y",),
        output_specs=(spec("y"),),
    )
    return _plan([[route]], 4, [3])


async def test_switch_runs_each_branch_on_its_rows_and_reassembles_in_order():
    big, small = linear_model(scale=100.0), linear_model(scale=-1.0)
    obs = RecordingObserver()
    x = np.array([[1.0], [20.0], [2.0], [30.0]], dtype=np.float32)
    (out,) = await PlanRunner(_switch_plan(big, small)).run([x], observer=obs)
    np.testing.assert_allclose(out, [[-1.0], [2000.0], [-2.0], [3000.0]])
    assert big.rows_seen == [2] and small.rows_seen == [2]
    route_event = next(e for e in obs.events if e.node == "route")
    assert route_event.branch == {"big": 2, "small": 2}


async def test_switch_with_all_rows_on_one_branch_skips_the_other():
    big, small = linear_model(), linear_model()
    x = np.array([[1.0], [2.0]], dtype=np.float32)
    await PlanRunner(_switch_plan(big, small)).run([x])
    assert big.calls == 0 and small.calls == 1


async def test_a_row_result_does_not_depend_on_its_batch_mates():
    big, small = linear_model(scale=100.0), linear_model(scale=-1.0)
    runner = PlanRunner(_switch_plan(big, small))
    rng = np.random.default_rng(7)
    batch = rng.uniform(0, 20, size=(64, 1)).astype(np.float32)
    (together,) = await runner.run([batch])
    for i in range(0, 64, 9):
        (alone,) = await runner.run([batch[i : i + 1]])
        np.testing.assert_array_equal(alone[0], together[i])


async def test_empty_batch_through_a_switch():
    (out,) = await PlanRunner(_switch_plan(linear_model(), linear_model())).run(
        [np.zeros((0, 1), np.float32)]
    )
    assert out.shape == (0, 1) and out.dtype == np.float32


async def test_observer_sees_inputs_outputs_and_timing():
    m = linear_model()
    obs = RecordingObserver()
    plan = _plan([[_model_step("m", m, 0, 1)]], 2, [1], slot_names=["inputs.a", "m.y"])
    await PlanRunner(plan).run([np.ones((3, 1), np.float32)], observer=obs)
    (event,) = obs.events
    assert event.node == "m" and event.kind == "model" and event.rows == 3
    assert set(event.inputs) == {"inputs.a"} and set(event.outputs) == {"y"}
    assert event.duration_ns > 0 and event.error is None


async def test_failures_are_counted():
    broken = FakeModel(signature=ModelSignature((spec("x"),), (spec("y"),)), fn=lambda x: 1 / 0)
    runner = PlanRunner(_plan([[_model_step("m", broken, 0, 1)]], 2, [1]))
    with pytest.raises(InternalError):
        await runner.run([np.ones((1, 1), np.float32)])
    assert runner.stats.nodes["m"].fail.count == 1


async def test_thread_pool_wait_reported_by_a_runtime_is_kept_apart_from_compute():
    import dataclasses

    class QueuedModel(FakeModel):
        async def run(self, inputs, *, deadline=None):  # type: ignore[no-untyped-def]
            run = await super().run(inputs, deadline=deadline)
            return dataclasses.replace(run, queue_ns=7_000)  # as after waiting 7 µs for a thread

    base = linear_model()
    queued = QueuedModel(signature=base.signature, fn=base.fn)
    obs = RecordingObserver()
    runner = PlanRunner(
        _plan([[_model_step("m", queued, 0, 1)], [_model_step("n", linear_model(), 1, 2)]], 3, [2])
    )
    await runner.run([np.ones((1, 1), np.float32)], observer=obs)
    assert runner.stats.nodes["m"].queue.ns == 7_000
    assert runner.stats.nodes["n"].queue.ns == 0  # reset before every model step
    assert [e.queue_ns for e in obs.events] == [7_000, 0]
