"""The built-in one-node transforms: concat, slice, cast, reshape, argmax, threshold, identity.

Each builder checks its arguments and input specs, infers the output spec
(-1 dimensions propagate) and returns the numpy function to run per request.
Every function is a closure over precomputed values: no lookups per request.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from engine.graph.ops.call import OpCall, OpOutput, unify_shapes
from engine.tensors import DataType


def concat(call: OpCall) -> OpOutput | None:
    datatype = call.same_datatype()
    if datatype is None:
        return None
    rank = len(call.inputs[0].shape)
    if rank < 2:
        call.fail(
            f"'{call.inputs[0].name}' has shape {call.inputs[0].shape_text()}: rank-1 tensors have no axis "
            "to join along besides the batch; reshape them to [-1, 1] first",
            call.input_pos[0],
        )
        return None
    axis = call.axis(rank)
    if axis is None:
        return None
    shape = unify_shapes(call, call.inputs, skip_axis=axis)
    if shape is None:
        return None
    widths = [spec.shape[axis] for spec in call.inputs]
    shape[axis] = -1 if -1 in widths else sum(widths)

    def run(arrays: Sequence[np.ndarray]) -> tuple[np.ndarray, ...]:
        return (np.concatenate(arrays, axis=axis),)

    return OpOutput(datatype, tuple(shape), run)


def slice_(call: OpCall) -> OpOutput | None:
    source = call.inputs[0]
    axis = call.axis(len(source.shape))
    start, stop = call.int_param("start"), call.int_param("stop")
    if axis is None or (call.has("start") and start is None) or (call.has("stop") and stop is None):
        return None
    window = slice(start, stop)
    shape = list(source.shape)
    if shape[axis] != -1:
        shape[axis] = len(range(shape[axis])[window])
        if shape[axis] == 0:
            call.fail(
                f"start {start} / stop {stop} select nothing from dimension {axis} of size "
                f"{source.shape[axis]} ('{source.name}' is {source.shape_text()})"
            )
            return None
    index = (slice(None),) * axis + (window,)

    def run(arrays: Sequence[np.ndarray]) -> tuple[np.ndarray, ...]:
        return (np.ascontiguousarray(arrays[0][index]),)

    return OpOutput(source.datatype, tuple(shape), run)


def cast(call: OpCall) -> OpOutput | None:
    target = call.datatype_param("to")
    if target is None:
        return None
    source = call.inputs[0]
    if DataType.BYTES in (target, source.datatype) and target is not source.datatype:
        call.fail(f"cannot cast {source.datatype.value} to {target.value}: BYTES only casts to BYTES")
        return None
    dtype = target.numpy_dtype

    def run(arrays: Sequence[np.ndarray]) -> tuple[np.ndarray, ...]:
        return (arrays[0].astype(dtype, copy=False),)

    return OpOutput(target, source.shape, run)


def reshape(call: OpCall) -> OpOutput | None:
    param = call.params.get("shape")
    if param is None:
        call.fail("needs 'shape', e.g. shape: [-1, 4]")
        return None
    dims = param.value
    if not isinstance(dims, list) or not dims or not all(type(d) is int for d in dims):
        call.fail_param("shape", "must be a list of whole numbers such as [-1, 4]")
        return None
    if dims[0] != -1:
        call.fail_param("shape", f"must start with -1 (the batch dimension stays first), got {dims}")
        return None
    rest = tuple(dims[1:])
    if any(d < 1 for d in rest):
        call.fail_param("shape", f"dimensions after the batch must be positive, got {dims}")
        return None
    source = call.inputs[0]
    if len(source.shape) == 0:
        call.fail(f"'{source.name}' is a scalar and has no batch dimension", call.input_pos[0])
        return None
    tail = source.shape[1:]
    if -1 not in tail and math.prod(tail) != math.prod(rest):
        call.fail_param(
            "shape",
            f"{dims} holds {math.prod(rest)} values per row but '{source.name}' "
            f"({source.shape_text()}) has {math.prod(tail)}",
        )
        return None

    def run(arrays: Sequence[np.ndarray]) -> tuple[np.ndarray, ...]:
        a = arrays[0]
        return (a.reshape((a.shape[0], *rest)),)

    return OpOutput(source.datatype, (source.shape[0], *rest), run)


def argmax(call: OpCall) -> OpOutput | None:
    source = call.inputs[0]
    if source.datatype is DataType.BYTES:
        call.fail(f"needs numeric input, got {source.datatype.value}", call.input_pos[0])
        return None
    axis = call.axis(len(source.shape))
    if axis is None:
        return None
    shape = list(source.shape)
    shape[axis] = 1

    def run(arrays: Sequence[np.ndarray]) -> tuple[np.ndarray, ...]:
        return (np.argmax(arrays[0], axis=axis, keepdims=True).astype(np.int64, copy=False),)

    return OpOutput(DataType.INT64, tuple(shape), run)


def threshold(call: OpCall) -> OpOutput | None:
    source = call.inputs[0]
    value = call.number_param("value")
    if value is None:
        return None
    if not source.datatype.is_numeric:
        call.fail(f"needs numeric input, got {source.datatype.value}", call.input_pos[0])
        return None

    def run(arrays: Sequence[np.ndarray]) -> tuple[np.ndarray, ...]:
        return (np.greater_equal(arrays[0], value),)

    return OpOutput(DataType.BOOL, source.shape, run)


def identity(call: OpCall) -> OpOutput | None:
    source = call.inputs[0]

    def run(arrays: Sequence[np.ndarray]) -> tuple[np.ndarray, ...]:
        return (arrays[0],)

    return OpOutput(source.datatype, source.shape, run)
