"""The ONNX runtime against real onnxruntime, on tiny models built here with onnx.helper."""

from __future__ import annotations

import asyncio
import concurrent.futures.thread
import contextlib
import hashlib
import logging
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from engine.errors import InternalError, InvalidRequest, ModelContractError
from engine.interfaces import ModelOptions, ModelRuntime
from engine.runtimes.onnx import OnnxModel, OnnxRuntimeFactory
from engine.tensors import DataType

Dims = Sequence[int | str | None]
RNG = np.random.default_rng(0)
W = RNG.normal(size=(3, 2)).astype(np.float32)
B = RNG.normal(size=(2,)).astype(np.float32)


def _save(path: Path, nodes: list, inputs: list, outputs: list, **named: np.ndarray) -> Path:
    tensors = [numpy_helper.from_array(v, k) for k, v in named.items()]
    graph = helper.make_graph(nodes, path.stem, inputs, outputs, tensors)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return path


def _io(name: str, dims: Dims, elem: int = TensorProto.FLOAT) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, list(dims))


def linear_model(path: Path, dims: Dims = ("N", 3)) -> Path:
    """y = x @ W + b: FP32 [N, 3] -> [N, 2]."""
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Add", ["h", "B"], ["y"])]
    return _save(path, nodes, [_io("x", dims)], [_io("y", ("N", 2))], W=W, B=B)


def slow_model(path: Path, width: int = 512, depth: int = 16) -> Path:
    """A chain of ``depth`` [width x width] MatMuls: slow enough that it must run in the pool."""
    names = ["x"] + [f"h{i}" for i in range(depth)]
    nodes = [helper.make_node("MatMul", [names[i], "W"], [names[i + 1]]) for i in range(depth)]
    nodes.append(helper.make_node("Identity", [names[-1]], ["y"]))
    weight = (np.eye(width) + 0.001).astype(np.float32) / np.float32(1.0 + 0.001 * width)
    return _save(path, nodes, [_io("x", ("N", width))], [_io("y", ("N", width))], W=weight)


@pytest.fixture
def factory() -> Iterator[OnnxRuntimeFactory]:
    runtime_factory = OnnxRuntimeFactory(max_workers=2)
    yield runtime_factory
    runtime_factory.close()


@pytest.fixture
def linear(tmp_path: Path, factory: OnnxRuntimeFactory) -> OnnxModel:
    return factory.load(linear_model(tmp_path / "linear.onnx"), ModelOptions())


# --- loading ----------------------------------------------------------------------------------


def test_signature_maps_symbolic_and_unknown_dims_to_minus_one(tmp_path: Path, factory) -> None:
    nodes = [helper.make_node("Identity", ["a"], ["c"]), helper.make_node("Not", ["b"], ["d"])]
    inputs = [_io("a", ("batch", None, 4)), _io("b", (2, "k"), TensorProto.BOOL)]
    outputs = [_io("c", ("batch", None, 4)), _io("d", (2, "k"), TensorProto.BOOL)]
    model = factory.load(_save(tmp_path / "sig.onnx", nodes, inputs, outputs), ModelOptions())
    assert [(t.name, t.datatype, t.shape) for t in model.signature.inputs] == [
        ("a", DataType.FP32, (-1, -1, 4)),
        ("b", DataType.BOOL, (2, -1)),
    ]
    assert [t.name for t in model.signature.outputs] == ["c", "d"]
    assert model.signature.output("d").datatype is DataType.BOOL


def test_load_reads_sha256_and_fulfils_the_interface(tmp_path: Path, linear: OnnxModel) -> None:
    assert isinstance(linear, ModelRuntime)
    assert linear.sha256 == hashlib.sha256(linear.path.read_bytes()).hexdigest()
    assert linear.signature.input("x").shape == (-1, 3)
    assert linear.signature.output("y").shape == (-1, 2)


@pytest.mark.parametrize("content", [b"not an onnx model", b""])
def test_corrupt_file_is_a_value_error(tmp_path: Path, factory, content: bytes) -> None:
    path = tmp_path / "broken.onnx"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=r"cannot load model 'broken\.onnx'"):
        factory.load(path, ModelOptions())


def test_missing_file_unknown_op_and_unsupported_dtype_are_value_errors(tmp_path: Path, factory) -> None:
    with pytest.raises(ValueError, match=r"cannot read model 'absent\.onnx'"):
        factory.load(tmp_path / "absent.onnx", ModelOptions())
    unknown = _save(
        tmp_path / "op.onnx", [helper.make_node("NoSuchOp", ["x"], ["y"])], [_io("x", [1])], [_io("y", [1])]
    )
    with pytest.raises(ValueError, match="NoSuchOp") as info:
        factory.load(unknown, ModelOptions())
    assert "\n" not in str(info.value)
    seq = helper.make_tensor_sequence_value_info("s", TensorProto.FLOAT, None)
    sequence = _save(
        tmp_path / "seq.onnx", [helper.make_node("SequenceConstruct", ["x"], ["s"])], [_io("x", [1])], [seq]
    )
    with pytest.raises(ValueError, match=r"output 's' has type seq\(tensor\(float\)\)"):
        factory.load(sequence, ModelOptions())


def test_bad_options_are_value_errors(tmp_path: Path, factory) -> None:
    path = linear_model(tmp_path / "m.onnx")
    with pytest.raises(ValueError, match="execution"):
        factory.load(path, ModelOptions(execution="sometimes"))
    with pytest.raises(ValueError, match="threads"):
        factory.load(path, ModelOptions(intra_op_threads=0))


def test_one_session_per_file_released_by_the_last_close(tmp_path: Path, factory) -> None:
    path = linear_model(tmp_path / "m.onnx")
    first, second = factory.load(path, ModelOptions()), factory.load(path, ModelOptions(execution="pool"))
    assert factory.open_sessions == 1
    assert (first.inline, second.inline) == (True, False)
    first.close()
    first.close()  # idempotent
    assert factory.open_sessions == 1
    second.close()
    assert factory.open_sessions == 0


def _closes_within(model: OnnxModel, *held: Any) -> bool:
    """Whether ``model.close()`` returns while this thread holds ``held`` (as a finalizer would)."""
    returned = threading.Event()

    def close() -> None:
        with contextlib.ExitStack() as stack:
            for lock in held:
                stack.enter_context(lock)
            model.close()
            returned.set()

    threading.Thread(target=close, daemon=True).start()
    return returned.wait(5)


def test_a_model_closed_from_a_finalizer_never_deadlocks(tmp_path: Path, factory) -> None:
    """A dropped graph version closes its models from a GC finalizer, which runs wherever an
    allocation triggers a collection: inside an executor's ``submit`` (holding concurrent.futures'
    global lock), or while this factory's own lock is held by a load on the same thread. Closing
    must neither submit to an executor nor take that lock there (both hung a test run)."""
    path = linear_model(tmp_path / "m.onnx")
    in_submit = factory.load(path, ModelOptions())
    under_load = factory.load(path, ModelOptions())
    assert _closes_within(in_submit, concurrent.futures.thread._global_shutdown_lock)
    lock = factory._lock
    assert _closes_within(under_load, lock)
    assert factory.open_sessions == 0  # both releases counted, the session freed


# --- inline or pool -----------------------------------------------------------------------------


def test_fast_model_runs_inline_with_its_measured_time_exposed(linear: OnnxModel) -> None:
    assert linear.warmup_run_ns is not None and linear.warmup_run_ns > 0
    assert linear.warmup_probe_ns is not None and linear.warmup_error is None
    assert linear.inline is True and linear.inline_max_rows >= 1


def test_execution_option_and_threshold_override_the_measurement(tmp_path: Path) -> None:
    path = linear_model(tmp_path / "m.onnx")
    strict = OnnxRuntimeFactory(inline_threshold_ns=0)
    try:
        assert strict.load(path, ModelOptions()).inline is False
        assert strict.load(path, ModelOptions(execution="inline")).inline is True
        assert strict.load(path, ModelOptions(execution="pool")).inline_max_rows == 0
    finally:
        strict.close()


def test_slow_model_goes_to_the_pool_and_leaves_the_event_loop_free(tmp_path: Path, factory) -> None:
    path = slow_model(tmp_path / "slow.onnx")
    pooled = factory.load(path, ModelOptions())
    forced_inline = factory.load(path, ModelOptions(execution="inline"))
    assert pooled.inline is False and pooled.warmup_run_ns > factory.inline_threshold_ns
    x = np.ones((256, 512), np.float32)

    async def ticks_during(model: OnnxModel) -> int:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        start = ticks
        (y,) = (await model.run([x])).outputs
        progressed = ticks - start
        task.cancel()
        np.testing.assert_allclose(y, x, rtol=1e-3)
        return progressed

    assert asyncio.run(ticks_during(pooled)) > 10
    assert asyncio.run(ticks_during(forced_inline)) == 0  # the ticker can tell the difference


# --- running --------------------------------------------------------------------------------


async def test_run_matches_numpy_inline_and_in_the_pool(tmp_path: Path, factory) -> None:
    path = linear_model(tmp_path / "m.onnx")
    x = RNG.normal(size=(5, 3)).astype(np.float32)
    for execution in ("inline", "pool"):
        model = factory.load(path, ModelOptions(execution=execution))
        (y,) = (await model.run([x])).outputs
        np.testing.assert_allclose(y, x @ W + B, rtol=1e-5, atol=1e-6)
        assert y.dtype == np.float32 and y.shape == (5, 2)


def test_runs_go_below_onnxruntimes_python_wrapper_with_the_same_answer(linear: OnnxModel) -> None:
    session = linear._session
    assert session is not None
    # the session's C-level run, bound once, not InferenceSession.run (which re-checks every call)
    assert linear._run_direct == session._sess.run
    x = RNG.normal(size=(4, 3)).astype(np.float32)
    (y,) = linear.run_sync([x])
    np.testing.assert_array_equal(y, session.run(["y"], {"x": x})[0])
    linear.close()
    with pytest.raises(InternalError, match="closed"):
        linear.run_sync([x])


async def test_run_accepts_read_only_buffers(linear: OnnxModel) -> None:
    x = np.frombuffer(np.arange(6, dtype=np.float32).tobytes(), np.float32).reshape(2, 3)
    (y,) = (await linear.run([x])).outputs
    np.testing.assert_allclose(y, x @ W + B, rtol=1e-5)


@pytest.mark.parametrize("execution", ["inline", "pool"])
@pytest.mark.parametrize(
    ("bad", "words"),
    [
        (np.zeros((2, 5), np.float32), "invalid dimensions"),
        (np.zeros((2,), np.float32), "rank"),
        (np.zeros((2, 3), np.float64), "data type"),
    ],
)
async def test_bad_request_data_is_invalid_request(tmp_path, factory, execution, bad, words) -> None:
    model = factory.load(linear_model(tmp_path / "m.onnx"), ModelOptions(execution=execution))
    with pytest.raises(InvalidRequest, match=words) as info:
        await model.run([bad])
    message = str(info.value)
    assert message.startswith("model 'm.onnx': ") and str(tmp_path) not in message
    assert "\n" not in message and "ONNXRuntimeError" not in message


async def test_shape_failure_inside_a_dynamic_model_is_invalid_request(tmp_path, factory) -> None:
    model = factory.load(linear_model(tmp_path / "m.onnx", dims=("N", "K")), ModelOptions())
    assert model.warmup_error is not None and not model.inline  # zeros [1, 1] do not fit W [3, 2]
    with pytest.raises(InvalidRequest, match=r"[Dd]imension mismatch") as info:
        await model.run([np.zeros((2, 5), np.float32)])
    assert ".h:" not in str(info.value) and "Name:" not in str(info.value)


async def test_contract_and_lifecycle_errors(linear: OnnxModel) -> None:
    with pytest.raises(ModelContractError, match="returned 2 outputs"):
        linear._checked([np.zeros((1, 2), np.float32)] * 2)
    with pytest.raises(ModelContractError, match="output 'y' is int64"):
        linear._checked([np.zeros((1, 2), np.int64)])
    with pytest.raises(InternalError, match="takes 1 inputs"):
        await linear.run([])
    linear.close()
    with pytest.raises(InternalError, match="closed"):
        await linear.run([np.zeros((1, 3), np.float32)])


async def test_run_after_factory_close_is_internal_error(tmp_path: Path) -> None:
    closing = OnnxRuntimeFactory()
    model = closing.load(linear_model(tmp_path / "m.onnx"), ModelOptions(execution="pool"))
    closing.close()
    with pytest.raises(InternalError):
        await model.run([np.zeros((1, 3), np.float32)])


async def test_a_pool_run_reports_its_thread_wait(tmp_path: Path, factory: OnnxRuntimeFactory) -> None:
    model = factory.load(linear_model(tmp_path / "m.onnx"), ModelOptions(execution="pool"))
    run = await model.run([np.ones((2, 3), np.float32)])
    assert run.queue_ns >= 0 and run.batch_rows == 0 and not run.counts_batch


def _a_pool_thread_is_running_a_job() -> bool:
    """Some ``onnx`` pool thread is running its job (``OnnxModel._timed_run``, so ``session.run``).

    Read from the thread's Python frames at the executor's ``_WorkItem.run``, the last frame that is
    Python whether or not the engine's own modules are compiled (compiled functions have none)."""
    frames = sys._current_frames()
    for thread in threading.enumerate():
        frame = frames.get(thread.ident or -1)
        if not thread.name.startswith("onnx"):
            continue
        while frame is not None:
            code = frame.f_code
            if code.co_name == "run" and code.co_filename.endswith("concurrent/futures/thread.py"):
                return True
            frame = frame.f_back
    return False


async def test_a_cancelled_pool_run_is_terminated_not_left_running(
    tmp_path: Path, factory, caplog: pytest.LogCaptureFixture
) -> None:
    # Warm-up (1 and 64 rows) takes milliseconds; 4096 rows take many seconds, unless stopped.
    slow = factory.load(
        slow_model(tmp_path / "s.onnx", width=1024, depth=100), ModelOptions(execution="pool")
    )
    x = np.ones((4096, 1024), np.float32)
    task = asyncio.create_task(slow.run([x]))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while not _a_pool_thread_is_running_a_job() and loop.time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.005)
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    while slow.terminated == 0 and loop.time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    assert slow.terminated == 1 and factory.terminated_runs == 1  # stopped at a node boundary
    # Stopped on purpose: counted, not logged as an onnxruntime error (a shed shadow does this often).
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    (y,) = (await slow.run([x[:2]])).outputs  # the session is fine afterwards: the flag was that run's own
    assert y.shape == (2, 1024) and np.isfinite(y).all()
