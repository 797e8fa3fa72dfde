"""The built-in combines: mean, weighted_mean, max, min, sum, vote, concat (>= 2 inputs).

Inputs must share one datatype and agree in shape (-1 matches any size).
Output datatypes are exact: mean of FP32 is FP32 (integers average to FP64),
max/min/sum/vote keep the input datatype.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import reduce

import numpy as np

from engine.graph.ops.call import OpCall, OpOutput, unify_shapes
from engine.graph.ops.transforms import concat
from engine.tensors import DataType


def _common(call: OpCall, allowed: str) -> tuple[DataType, tuple[int, ...]] | None:
    if allowed == "numeric":
        datatype = call.same_datatype(lambda d: d.is_numeric, "numeric")
    else:
        datatype = call.same_datatype(lambda d: d is not DataType.BYTES, "numeric or BOOL")
    if datatype is None:
        return None
    shape = unify_shapes(call, call.inputs)
    return None if shape is None else (datatype, tuple(shape))


def _mean_type(datatype: DataType) -> tuple[DataType, np.dtype]:
    """Output datatype of an average, and the dtype to accumulate in."""
    if datatype is DataType.FP16:
        return datatype, np.dtype(np.float32)
    out = datatype if datatype.is_float else DataType.FP64
    return out, out.numpy_dtype


def mean(call: OpCall) -> OpOutput | None:
    common = _common(call, "numeric")
    if common is None:
        return None
    out, acc = _mean_type(common[0])
    dtype, k = out.numpy_dtype, len(call.inputs)

    def run(arrays: Sequence[np.ndarray]) -> tuple[np.ndarray, ...]:
        total = arrays[0].astype(acc, copy=True)
        for a in arrays[1:]:
            np.add(total, a, out=total, casting="unsafe")
        return ((total / acc.type(k)).astype(dtype, copy=False),)

    return OpOutput(out, common[1], run)


def weights_param(call: OpCall, n_inputs: int) -> list[float] | None:
    """``weights``: one non-negative number per input, not all zero (reported at the key)."""
    param = call.params.get("weights")
    if param is None:
        call.fail("needs 'weights', one number per input")
        return None
    raw = param.value
    if not isinstance(raw, list) or not all(
        isinstance(w, int | float) and not isinstance(w, bool) for w in raw
    ):
        call.fail_param("weights", "must be a list of numbers, one per input")
        return None
    if len(raw) != n_inputs:
        call.fail_param("weights", f"has {len(raw)} numbers but the node has {n_inputs} inputs")
        return None
    if any(w < 0 for w in raw) or sum(raw) <= 0:
        call.fail_param("weights", "must be non-negative and not all zero")
        return None
    return [float(w) for w in raw]


def weighted_mean(call: OpCall) -> OpOutput | None:
    common = _common(call, "numeric")
    raw = weights_param(call, len(call.inputs))
    if raw is None or common is None:
        return None
    out, acc = _mean_type(common[0])
    dtype = out.numpy_dtype
    weights = [acc.type(w / sum(raw)) for w in raw]

    def run(arrays: Sequence[np.ndarray]) -> tuple[np.ndarray, ...]:
        total = np.multiply(arrays[0], weights[0], dtype=acc)
        for a, w in zip(arrays[1:], weights[1:], strict=True):
            total += np.multiply(a, w, dtype=acc)
        return (total.astype(dtype, copy=False),)

    return OpOutput(out, common[1], run)


def _elementwise(call: OpCall, ufunc: np.ufunc, allowed: str) -> OpOutput | None:
    common = _common(call, allowed)
    if common is None:
        return None
    dtype = common[0].numpy_dtype

    def run(arrays: Sequence[np.ndarray]) -> tuple[np.ndarray, ...]:
        return (reduce(ufunc, arrays).astype(dtype, copy=False),)

    return OpOutput(common[0], common[1], run)


def max_(call: OpCall) -> OpOutput | None:
    return _elementwise(call, np.maximum, "numeric or bool")


def min_(call: OpCall) -> OpOutput | None:
    return _elementwise(call, np.minimum, "numeric or bool")


def sum_(call: OpCall) -> OpOutput | None:
    return _elementwise(call, np.add, "numeric")


def vote(call: OpCall) -> OpOutput | None:
    """Majority per element; a tie goes to the smallest of the tied values."""
    common = _common(call, "numeric or bool")
    if common is None:
        return None
    datatype = common[0]
    dtype = datatype.numpy_dtype
    if datatype is DataType.BOOL:
        sentinel: object = True
    elif datatype.is_float:
        sentinel = np.inf
    else:
        sentinel = np.iinfo(dtype).max

    def run(arrays: Sequence[np.ndarray]) -> tuple[np.ndarray, ...]:
        stack = np.stack(arrays)
        counts = (stack[:, None] == stack[None, :]).sum(axis=1)
        winners = np.where(counts == counts.max(axis=0), stack, np.asarray(sentinel, dtype=dtype))
        return (winners.min(axis=0),)

    return OpOutput(datatype, common[1], run)


def combine_concat(call: OpCall) -> OpOutput | None:
    return concat(call)
