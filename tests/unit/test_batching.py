"""The dynamic batcher (engine.runtimes.batching) around fakes and around real onnxruntime.

No assertion here depends on how fast the machine is: queue delays are either long enough never
to fire during a test (batches are then dispatched by size, a deadline or a cancellation) or
irrelevant to what is checked.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from engine.errors import InternalError, InvalidRequest, ModelContractError, Unavailable
from engine.interfaces import BatchingOptions, ModelOptions, ModelSignature
from engine.runtimes.batching import BatchingRuntime
from engine.runtimes.onnx import OnnxRuntimeFactory
from tests.fakes import FakeModel, spec
from tests.unit.test_onnx_runtime import linear_model

NEVER = 3600.0  # a queue delay no test waits for
LIMIT = 30.0  # only there so a broken batcher fails instead of hanging


def doubling(width: int = 2, trailing: int | None = None) -> FakeModel:
    """y = 2x + row-sum, FP32 [-1, width] -> [-1, width]: every output row depends on its input row only."""
    dim = width if trailing is None else trailing

    def fn(x: np.ndarray) -> tuple[np.ndarray, ...]:
        return ((2 * x + x.sum(axis=1, keepdims=True)).astype(np.float32),)

    sig = ModelSignature(inputs=(spec("x", shape=(-1, dim)),), outputs=(spec("y", shape=(-1, dim)),))
    return FakeModel(signature=sig, fn=fn)


def rows(start: int, n: int, width: int = 2) -> np.ndarray:
    """``n`` distinct rows: values start, start+1, …"""
    return np.arange(start * width, (start + n) * width, dtype=np.float32).reshape(n, width)


def batcher(
    model: FakeModel, size: int, delay: float = NEVER, preferred: Sequence[int] = ()
) -> BatchingRuntime:
    options = BatchingOptions(size, delay, tuple(preferred))
    return BatchingRuntime(model, options, run_estimate_s=0.0, warm_up_alone=False)


async def call(runtime: BatchingRuntime, x: np.ndarray, deadline: float | None = None) -> tuple:
    """One caller: its outputs, the batch it ran in (rows, whether it counts it) and its queue wait."""
    run = await runtime.run([x], deadline=deadline)
    return run.outputs, (run.batch_rows, run.counts_batch), run.queue_ns


async def test_concurrent_callers_get_exactly_their_own_rows() -> None:
    model = doubling()
    runtime = batcher(model, size=6, delay=0.0)
    inputs = [rows(10 * i, 1 + i % 3) for i in range(8)]  # 1+2+3+1+2+3+1+2 = 15 rows
    async with asyncio.timeout(LIMIT):
        results = await asyncio.gather(*(call(runtime, x) for x in inputs))
    for x, (out, _, _) in zip(inputs, results, strict=True):
        np.testing.assert_array_equal(out[0], model.fn(x)[0])
    assert model.calls < len(inputs)
    assert sum(model.rows_seen) == sum(x.shape[0] for x in inputs)


async def test_no_batch_exceeds_max_batch_size_and_big_requests_run_in_chunks() -> None:
    model = doubling()
    runtime = batcher(model, size=8, delay=0.0)
    rng = np.random.default_rng(1)
    inputs = [rows(100 * i, int(rng.integers(1, 6))) for i in range(40)] + [rows(9000, 21)]
    async with asyncio.timeout(LIMIT):
        results = await asyncio.gather(*(call(runtime, x) for x in inputs))
    assert max(model.rows_seen) <= 8
    assert sum(model.rows_seen) == sum(x.shape[0] for x in inputs)
    for x, (out, (size, _), _) in zip(inputs, results, strict=True):
        np.testing.assert_array_equal(out[0], model.fn(x)[0])
        assert 1 <= size <= 8


async def test_a_full_batch_goes_at_once_and_exactly_one_caller_counts_it() -> None:
    model = doubling()
    runtime = batcher(model, size=4)
    async with asyncio.timeout(LIMIT):  # the delay never fires: only reaching 4 rows dispatches
        results = await asyncio.gather(*(call(runtime, rows(i, 1)) for i in range(4)))
    assert model.rows_seen == [4]
    told = [batch for _, batch, _ in results]
    assert all(size == 4 for size, _ in told)
    assert sum(counted for _, counted in told) == 1


async def test_a_preferred_size_dispatches_without_waiting() -> None:
    model = doubling()
    runtime = batcher(model, size=64, preferred=[3])
    async with asyncio.timeout(LIMIT):
        await asyncio.gather(*(call(runtime, rows(i, 1)) for i in range(3)))
    assert model.rows_seen == [3]


async def test_the_queue_delay_never_outlasts_the_deadline() -> None:
    model = doubling()
    runtime = batcher(model, size=64)  # an hour's delay, but the caller has a second left
    deadline = time.monotonic() + 1.0
    async with asyncio.timeout(LIMIT):
        _, (size, counted), waited = await call(runtime, rows(0, 2), deadline=deadline)
    assert model.rows_seen == [2] and (size, counted) == (2, True)
    assert waited >= 0


async def test_a_deadline_sooner_than_the_queue_dispatches_everyone_queued() -> None:
    model = doubling()
    runtime = batcher(model, size=64)
    async with asyncio.timeout(LIMIT):
        relaxed = asyncio.ensure_future(call(runtime, rows(0, 1)))
        await asyncio.sleep(0)
        hurried = call(runtime, rows(5, 1), deadline=time.monotonic() + 0.5)
        (a, _, _), (b, _, _) = await asyncio.gather(relaxed, hurried)
    assert model.rows_seen == [2]
    np.testing.assert_array_equal(a[0], model.fn(rows(0, 1))[0])
    np.testing.assert_array_equal(b[0], model.fn(rows(5, 1))[0])


async def test_a_malformed_request_is_refused_before_it_joins_a_batch() -> None:
    model = doubling()
    runtime = batcher(model, size=3)
    async with asyncio.timeout(LIMIT):
        good = [asyncio.ensure_future(call(runtime, rows(i, 1))) for i in range(2)]
        await asyncio.sleep(0)
        for bad in (
            np.zeros((1, 3), np.float32),  # wrong width
            np.zeros((1, 2), np.float64),  # wrong datatype
            np.zeros((2,), np.float32),  # wrong rank
        ):
            with pytest.raises(InvalidRequest):
                await runtime.run([bad])
        good.append(asyncio.ensure_future(call(runtime, rows(7, 1))))
        results = await asyncio.gather(*good)
    assert model.rows_seen == [3]
    for i, (out, _, _) in zip((0, 1, 7), results, strict=True):
        np.testing.assert_array_equal(out[0], model.fn(rows(i, 1))[0])


async def test_inputs_that_disagree_on_rows_are_refused() -> None:
    sig = ModelSignature(inputs=(spec("a"), spec("b")), outputs=(spec("y"),))
    model = FakeModel(signature=sig, fn=lambda a, b: (a + b,))
    with pytest.raises(InvalidRequest, match="disagree on rows"):
        await batcher(model, size=4).run([np.zeros((2, 1), np.float32), np.zeros((3, 1), np.float32)])
    with pytest.raises(InternalError):
        await batcher(model, size=4).run([np.zeros((2, 1), np.float32)])


async def test_different_trailing_shapes_never_share_a_batch() -> None:
    model = doubling(trailing=-1)
    runtime = batcher(model, size=4)
    inputs = [rows(0, 2, width=2), rows(1, 2, width=3), rows(2, 2, width=3)]
    async with asyncio.timeout(LIMIT):
        tasks = [asyncio.ensure_future(call(runtime, x)) for x in inputs]
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        results = await asyncio.gather(*tasks)
    assert model.rows_seen == [2, 4]  # the width-2 batch went when a width-3 request arrived
    for x, (out, _, _) in zip(inputs, results, strict=True):
        np.testing.assert_array_equal(out[0], model.fn(x)[0])


async def test_a_model_failure_fails_its_batch_only_each_with_its_own_error() -> None:
    def fn(x: np.ndarray) -> tuple[np.ndarray, ...]:
        if (x < 0).any():
            raise ModelContractError("model 'fake.onnx' cannot take negative values")
        return (x * 2,)

    sig = ModelSignature(inputs=(spec("x", shape=(-1, 2)),), outputs=(spec("y", shape=(-1, 2)),))
    model = FakeModel(signature=sig, fn=fn)
    runtime = batcher(model, size=2)
    async with asyncio.timeout(LIMIT):
        first = [asyncio.ensure_future(call(runtime, x)) for x in (rows(0, 1), -rows(1, 1))]
        second = [asyncio.ensure_future(call(runtime, x)) for x in (rows(2, 1), rows(3, 1))]
        failed = await asyncio.gather(*first, return_exceptions=True)
        served = await asyncio.gather(*second)
    assert all(isinstance(e, ModelContractError) for e in failed)
    assert failed[0] is not failed[1]
    assert str(failed[0]) == str(failed[1]) == "model 'fake.onnx' cannot take negative values"
    np.testing.assert_array_equal(served[1][0][0], rows(3, 1) * 2)


async def test_a_cancelled_caller_leaves_the_queue_and_the_others_are_served() -> None:
    model = doubling()
    runtime = batcher(model, size=3)
    async with asyncio.timeout(LIMIT):
        leaving = asyncio.ensure_future(call(runtime, rows(0, 1)))
        staying = asyncio.ensure_future(call(runtime, rows(1, 1)))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        leaving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await leaving
        later = [asyncio.ensure_future(call(runtime, rows(i, 1))) for i in (2, 3)]
        results = await asyncio.gather(staying, *later)
    assert model.rows_seen == [3]  # rows 1, 2, 3: the cancelled caller's row never ran
    for i, (out, _, _) in zip((1, 2, 3), results, strict=True):
        np.testing.assert_array_equal(out[0], model.fn(rows(i, 1))[0])


async def test_a_model_answering_the_wrong_number_of_rows_breaks_its_contract() -> None:
    sig = ModelSignature(inputs=(spec("x", shape=(-1, 2)),), outputs=(spec("y", shape=(-1, 2)),))
    model = FakeModel(signature=sig, fn=lambda x: (x[:1],))
    runtime = batcher(model, size=2)
    async with asyncio.timeout(LIMIT):
        results = await asyncio.gather(*(call(runtime, rows(i, 1)) for i in range(2)), return_exceptions=True)
    assert all(isinstance(e, ModelContractError) for e in results)


async def test_close_fails_queued_callers_as_unavailable() -> None:
    model = doubling()
    runtime = batcher(model, size=8)
    async with asyncio.timeout(LIMIT):
        waiting = asyncio.ensure_future(call(runtime, rows(0, 1)))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        runtime.close()
        with pytest.raises(Unavailable):
            await waiting
        with pytest.raises(Unavailable):
            await runtime.run([rows(1, 1)])
    assert model.closed and model.calls == 0


async def test_the_onnx_factory_batches_and_matches_per_request_runs(tmp_path: Path) -> None:
    factory = OnnxRuntimeFactory(max_workers=2)
    try:
        path = linear_model(tmp_path / "linear.onnx")
        options = ModelOptions(batching=BatchingOptions(max_batch_size=16, max_queue_delay_s=NEVER))
        runtime = factory.load(path, options)
        assert isinstance(runtime, BatchingRuntime)
        single = factory.load(path, ModelOptions())
        rng = np.random.default_rng(2)
        inputs = [rng.normal(size=(1 + i % 4, 3)).astype(np.float32) for i in range(10)]  # 25 rows: 16 + 9
        async with asyncio.timeout(LIMIT):
            await runtime.run([inputs[0]])  # the warm-up runs alone
            first = await asyncio.gather(*(runtime.run([x]) for x in inputs[:7]))  # exactly 16 rows
            assert runtime.batches == 2
            rest = await asyncio.gather(
                *(call(runtime, x, deadline=time.monotonic() + 0.5) for x in inputs[7:])  # by deadline
            )
        outputs = [run.outputs[0] for run in first] + [out[0][0] for out in rest]
        for x, out in zip(inputs, outputs, strict=True):
            np.testing.assert_allclose(out, single.run_inline([x])[0], rtol=1e-6, atol=1e-6)
        runtime.close()
        single.close()
    finally:
        factory.close()


async def test_the_first_call_is_the_warm_up_and_does_not_wait() -> None:
    model = doubling()
    runtime = BatchingRuntime(model, BatchingOptions(8, NEVER), run_estimate_s=0.0)
    async with asyncio.timeout(LIMIT):
        (out,), (size, counted), _ = await call(runtime, rows(0, 1))
    np.testing.assert_array_equal(out, model.fn(rows(0, 1))[0])
    assert (size, counted) == (1, True) and model.rows_seen == [1]
    second = asyncio.ensure_future(call(runtime, rows(1, 1)))  # from now on, rows wait for company
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert not second.done() and model.rows_seen == [1]
    second.cancel()
