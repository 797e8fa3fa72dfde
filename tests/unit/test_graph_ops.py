"""Built-in transforms and combines: numerics, exact dtypes, shape inference, argument errors."""

from __future__ import annotations

import numpy as np
import pytest

from engine.graph.ops.call import OpCall
from engine.graph.ops.table import COMBINES, build_op
from engine.graph.values.diagnostics import Pos, Report
from engine.graph.values.spec import Param
from tests.fakes import spec


def _call(kind: str, op: str, inputs, **params) -> tuple[OpCall, Report]:
    report = Report("g.yaml")
    call = OpCall(
        node="n",
        kind=kind,
        op=op,
        inputs=tuple(inputs),
        input_pos=tuple(Pos(2, i + 1) for i in range(len(inputs))),
        params={k: Param(v, Pos(3, 9), Pos(3, 3)) for k, v in params.items()},
        pos=Pos(1, 5),
        report=report,
    )
    return call, report


def _build(kind: str, op: str, inputs, **params):
    call, report = _call(kind, op, inputs, **params)
    out = build_op(call)
    assert out is not None, [str(d) for d in report.items]
    return out


def _fails(kind: str, op: str, inputs, **params) -> str:
    call, report = _call(kind, op, inputs, **params)
    assert build_op(call) is None
    return report.items[0].message


def test_concat_joins_and_infers_width() -> None:
    out = _build("transform", "concat", [spec("a", shape=(-1, 1)), spec("b", shape=(-1, 6))])
    assert out.shape == (-1, 7)
    (y,) = out.fn([np.zeros((2, 1), np.float32), np.ones((2, 6), np.float32)])
    assert y.shape == (2, 7) and y.dtype == np.float32
    unknown = _build("transform", "concat", [spec("a", shape=(-1, -1)), spec("b", shape=(-1, 6))])
    assert unknown.shape == (-1, -1)


def test_concat_refuses_mixed_dtypes_and_batch_axis() -> None:
    assert "same datatype" in _fails("transform", "concat", [spec("a"), spec("b", "FP64")])
    assert "batch dimension" in _fails("transform", "concat", [spec("a"), spec("b")], axis=0)
    assert "rank-1" in _fails("transform", "concat", [spec("a", shape=(-1,)), spec("b", shape=(-1,))])


def test_slice_python_semantics() -> None:
    out = _build("transform", "slice", [spec("a", shape=(-1, 6))], start=1, stop=-1)
    assert out.shape == (-1, 4)
    (y,) = out.fn([np.arange(12, dtype=np.float32).reshape(2, 6)])
    assert y.tolist() == [[1, 2, 3, 4], [7, 8, 9, 10]]
    assert "select nothing" in _fails("transform", "slice", [spec("a", shape=(-1, 6))], start=4, stop=2)


def test_cast_reshape_argmax_threshold_identity() -> None:
    cast = _build("transform", "cast", [spec("a")], to="int64")
    assert cast.datatype.value == "INT64" and cast.fn([np.array([[2.7]], np.float32)])[0].dtype == np.int64
    reshape = _build("transform", "reshape", [spec("a", shape=(-1, 6))], shape=[-1, 2, 3])
    assert reshape.shape == (-1, 2, 3) and reshape.fn([np.zeros((4, 6))])[0].shape == (4, 2, 3)
    argmax = _build("transform", "argmax", [spec("a", shape=(-1, 3))])
    (idx,) = argmax.fn([np.array([[0.1, 0.7, 0.2]], np.float32)])
    assert argmax.shape == (-1, 1) and idx.dtype == np.int64 and idx.tolist() == [[1]]
    threshold = _build("transform", "threshold", [spec("a")], value=0.5)
    assert threshold.fn([np.array([[0.5], [0.4]], np.float32)])[0].tolist() == [[True], [False]]
    identity = _build("transform", "identity", [spec("a", "INT8")])
    assert identity.datatype.value == "INT8"


def test_op_argument_errors() -> None:
    assert "unknown datatype 'FP33'; did you mean 'FP32'?" in _fails(
        "transform", "cast", [spec("a")], to="FP33"
    )
    assert "must start with -1" in _fails("transform", "reshape", [spec("a", shape=(-1, 6))], shape=[2, 3])
    assert "holds 4 values per row" in _fails(
        "transform", "reshape", [spec("a", shape=(-1, 6))], shape=[-1, 4]
    )
    assert "needs 'value'" in _fails("transform", "threshold", [spec("a")])
    assert "must be a whole number" in _fails("transform", "argmax", [spec("a", shape=(-1, 3))], axis="last")
    assert "needs exactly one input, got 2" in _fails("transform", "identity", [spec("a"), spec("b")])
    assert "needs at least 2 inputs, got 1" in _fails("combine", "mean", [spec("a")])


@pytest.mark.parametrize("datatype", ["FP16", "FP32", "FP64"])
def test_mean_keeps_float_dtype(datatype: str) -> None:
    out = _build("combine", "mean", [spec("a", datatype), spec("b", datatype)])
    dtype = out.datatype.numpy_dtype
    (y,) = out.fn([np.array([[1.0]], dtype), np.array([[2.0]], dtype)])
    assert out.datatype.value == datatype and y.dtype == dtype and y.tolist() == [[1.5]]


def test_integer_mean_is_fp64_and_sum_keeps_dtype() -> None:
    mean = _build("combine", "mean", [spec("a", "INT32"), spec("b", "INT32")])
    assert mean.datatype.value == "FP64"
    total = _build("combine", "sum", [spec("a", "INT32"), spec("b", "INT32"), spec("c", "INT32")])
    (y,) = total.fn([np.array([[1]], np.int32)] * 3)
    assert y.dtype == np.int32 and y.tolist() == [[3]]


def test_weighted_mean_normalises_weights() -> None:
    out = _build("combine", "weighted_mean", [spec("a"), spec("b")], weights=[3, 1])
    (y,) = out.fn([np.array([[1.0]], np.float32), np.array([[5.0]], np.float32)])
    assert y.dtype == np.float32 and y.tolist() == [[2.0]]
    assert "has 3 numbers but the node has 2 inputs" in _fails(
        "combine", "weighted_mean", [spec("a"), spec("b")], weights=[1, 1, 1]
    )


def test_max_min_keep_dtype() -> None:
    a, b = np.array([[1.0], [5.0]], np.float32), np.array([[3.0], [2.0]], np.float32)
    assert _build("combine", "max", [spec("a"), spec("b")]).fn([a, b])[0].tolist() == [[3.0], [5.0]]
    assert _build("combine", "min", [spec("a"), spec("b")]).fn([a, b])[0].tolist() == [[1.0], [2.0]]


def test_vote_majority_with_ties_to_smallest() -> None:
    out = _build("combine", "vote", [spec("a", "INT64")] * 4)
    arrays = [
        np.array([[1], [3], [2]]),
        np.array([[2], [3], [1]]),
        np.array([[2], [1], [1]]),
        np.array([[1], [0], [2]]),
    ]
    (y,) = out.fn(arrays)
    assert y.dtype == np.int64 and y.tolist() == [[1], [3], [1]]


def test_combine_shapes_must_agree() -> None:
    message = _fails("combine", "mean", [spec("a", shape=(-1, 2)), spec("b", shape=(-1, 3))])
    assert "do not agree in dimension 1" in message
    assert set(COMBINES) == {"mean", "weighted_mean", "max", "min", "sum", "vote", "concat"}
