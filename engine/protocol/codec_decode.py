"""Tensor side of the request codec: a ModelInferRequest's inputs -> numpy arrays.

Every check a request can fail raises ``TensorError`` naming the tensor (or
``InvalidRequest`` when no single tensor is at fault), which the status table
maps to INVALID_ARGUMENT. Shapes and sizes are checked from the message's
metadata before any array is allocated.

Raw contents are little-endian and row-major. A numeric raw tensor is decoded
with ``np.frombuffer(...).reshape(shape)``: the array is a read-only view on
the ``bytes`` object protobuf hands us for that ``raw_input_contents`` entry
(upb copies a bytes field out of its arena once, on access; we never copy it
again). Nodes must not write into input arrays in place. BYTES tensors become
1-D-then-reshaped ``dtype=object`` arrays of ``bytes``.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import numpy as np
from google.protobuf.descriptor import FieldDescriptor

from engine.errors import InvalidRequest, TensorError, Unimplemented
from engine.protocol.codec_tables import (
    DEFAULT_LIMITS,
    FIELD_DTYPE,
    TYPED_FIELD,
    TYPED_RANGE,
    WIRE_DTYPE,
    CodecLimits,
)
from engine.protocol.generated.inference import grpc_service_pb2 as pb
from engine.serving.shapes import checked_shape, shape_text
from engine.tensors import DataType, TensorSpec

_LENGTH = struct.Struct("<I")
SHM_PARAMETER = "shared_memory_region"
_NAME_CLIP = 100
_LIST_CLIP = 10


def clip_name(name: str) -> str:
    """A client-supplied name, shortened so status messages stay small."""
    return name if len(name) <= _NAME_CLIP else name[:_NAME_CLIP] + "…"


def names_text(names: Sequence[str]) -> str:
    shown = ", ".join(clip_name(n) for n in names[:_LIST_CLIP])
    return shown + (f", … ({len(names)} in all)" if len(names) > _LIST_CLIP else "") or "none"


def decode_inputs(
    request: pb.ModelInferRequest,
    expected: Sequence[TensorSpec],
    limits: CodecLimits = DEFAULT_LIMITS,
) -> dict[str, np.ndarray]:
    """The request's input tensors as numpy arrays, keyed in ``expected`` order.

    Raises ``TensorError`` for a missing, unknown or duplicate input, a
    datatype or shape that differs from ``expected``, a size above ``limits``,
    data of the wrong size or framing, values out of range, or contents in the
    wrong place; ``InvalidRequest`` when raw contents outnumber the inputs;
    ``Unimplemented`` for shared-memory inputs.
    """
    # One wrapper per tensor, each read once. A slice, not list(): upb's containers have no
    # __iter__, so iterating one ends by raising (and formatting) an IndexError.
    inputs = request.inputs[:]
    if len(inputs) == len(expected) and all(
        tensor.name == spec.name
        for tensor, spec in zip(inputs, expected, strict=False)  # lengths equal
    ):  # the usual request: the declared inputs, in order, each once
        order: Sequence[int] = range(len(inputs))
    else:
        order = _positions(inputs, expected)

    raw = request.raw_input_contents
    n_raw = len(raw)
    if n_raw:
        if n_raw > len(inputs):
            raise InvalidRequest(
                f"raw_input_contents has {n_raw} entries for {len(inputs)} inputs "
                "(give one entry per input, in input order, or none)"
            )
        if n_raw < len(inputs):
            raise TensorError(
                clip_name(inputs[n_raw].name),
                f"has no raw_input_contents entry: {n_raw} entries for {len(inputs)} inputs "
                "(give one entry per input, in input order, or none)",
            )

    decoded: dict[str, np.ndarray] = {}
    for spec, index in zip(expected, order, strict=False):  # order has one index per expected input
        tensor = inputs[index]
        shape, count = _checked_shape(tensor, spec, limits)
        typed = tensor.contents.ListFields() if tensor.HasField("contents") else []
        if tensor.parameters and SHM_PARAMETER in tensor.parameters:
            raise Unimplemented(
                f"input '{spec.name}': shared memory is not supported; send the data in the request",
                tensor=spec.name,
            )
        if n_raw:
            if typed:
                raise TensorError(spec.name, "has both typed contents and raw_input_contents; give one")
            decoded[spec.name] = _decode_raw(spec, raw[index], shape, count)
        else:
            decoded[spec.name] = _decode_typed(spec, tensor, typed, shape, count)
    return decoded


def _positions(
    inputs: Sequence[pb.ModelInferRequest.InferInputTensor], expected: Sequence[TensorSpec]
) -> list[int]:
    """Where each expected input is among the request's tensors; TensorError or InvalidRequest for
    a duplicate, unknown or missing input."""
    position: dict[str, int] = {}
    for index, tensor in enumerate(inputs):
        name = tensor.name
        if name in position:
            raise TensorError(clip_name(name), "input given more than once")
        position[name] = index
    if len(position) != len(expected) or any(spec.name not in position for spec in expected):
        declared = {spec.name for spec in expected}
        unknown = [name for name in position if name not in declared]
        if unknown:
            inputs_text = names_text([s.name for s in expected])
            if len(unknown) == 1:
                raise TensorError(
                    clip_name(unknown[0]), f"is not an input of this model (inputs: {inputs_text})"
                )
            raise InvalidRequest(
                f"tensors {names_text(unknown)} are not inputs of this model (inputs: {inputs_text})",
                tensor=clip_name(unknown[0]),
            )
        missing = [spec for spec in expected if spec.name not in position]
        if len(missing) == 1:
            spec = missing[0]
            raise TensorError(
                spec.name, f"missing: the model needs it ({spec.datatype.value} {spec.shape_text()})"
            )
        described = ", ".join(f"'{s.name}' ({s.datatype.value} {s.shape_text()})" for s in missing)
        raise InvalidRequest(
            f"{len(missing)} inputs missing: {described}; the model needs every one", tensor=missing[0].name
        )
    return [position[spec.name] for spec in expected]


def _checked_shape(
    tensor: pb.ModelInferRequest.InferInputTensor, spec: TensorSpec, limits: CodecLimits
) -> tuple[tuple[int, ...], int]:
    name = spec.name
    if tensor.datatype != spec.datatype._value_:  # _value_: the plain attribute behind .value
        raise TensorError(
            name, f"datatype '{clip_name(tensor.datatype)}' does not match the declared {spec.datatype.value}"
        )
    shape = tuple(tensor.shape[:])  # the slice is a list: no iteration of the upb container
    count = checked_shape(name, shape, spec, limits.max_elements)
    return shape, count


def _decode_raw(spec: TensorSpec, data: bytes, shape: tuple[int, ...], count: int) -> np.ndarray:
    if spec.datatype is DataType.BYTES:
        return _decode_bytes_framing(spec.name, data, count).reshape(shape)
    wire = WIRE_DTYPE[spec.datatype]
    want = count * wire.itemsize
    if len(data) != want:
        raise TensorError(
            spec.name,
            f"raw contents are {len(data)} bytes but shape {shape_text(shape)} of "
            f"{spec.datatype.value} needs {want} bytes ({count} x {wire.itemsize})",
        )
    array = np.frombuffer(data, dtype=wire)
    if spec.datatype is DataType.BOOL:
        if count and int(array.max()) > 1:
            at = int(np.flatnonzero(array > 1)[0])
            raise TensorError(spec.name, f"BOOL raw byte {int(array[at])} at element {at} is not 0 or 1")
        array = array.view(np.bool_)
    return array.reshape(shape)


def _decode_bytes_framing(name: str, data: bytes, count: int) -> np.ndarray:
    """Split BYTES raw contents: each element is a 4-byte little-endian length, then that many bytes."""
    size = len(data)
    if size < 4 * count:
        raise TensorError(
            name,
            f"BYTES raw contents are {size} bytes, too short for {count} elements "
            "(each needs a 4-byte length prefix)",
        )
    elements: list[bytes] = []
    append = elements.append
    unpack = _LENGTH.unpack_from
    offset = 0
    for index in range(count):
        if offset + 4 > size:
            raise TensorError(
                name, f"BYTES raw contents end inside the length prefix of element {index} of {count}"
            )
        length = unpack(data, offset)[0]
        offset += 4
        end = offset + length
        if end > size:
            raise TensorError(
                name,
                f"BYTES element {index} declares {length} bytes but only {size - offset} remain",
            )
        append(data[offset:end])
        offset = end
    if offset != size:
        raise TensorError(
            name,
            f"BYTES raw contents have {size - offset} bytes left after {count} elements "
            "(more elements than the shape holds, or bad framing)",
        )
    out = np.empty(count, dtype=object)
    out[:] = elements
    return out


def _decode_typed(
    spec: TensorSpec,
    tensor: pb.ModelInferRequest.InferInputTensor,
    typed: Sequence[tuple[FieldDescriptor, Any]],
    shape: tuple[int, ...],
    count: int,
) -> np.ndarray:
    name = spec.name
    field = TYPED_FIELD[spec.datatype]
    if field is None:
        if not typed and count == 0:
            return np.empty(shape, dtype=spec.datatype.numpy_dtype)
        raise TensorError(
            name, f"{spec.datatype.value} has no typed contents field; send it in raw_input_contents"
        )
    for descriptor, _ in typed:
        if descriptor.name != field:
            raise TensorError(
                name, f"typed contents are in '{descriptor.name}' but {spec.datatype.value} uses '{field}'"
            )
    values = getattr(tensor.contents, field)
    if len(values) != count:
        if not typed:
            raise TensorError(name, f"has no data: shape {shape_text(shape)} needs {count} values")
        raise TensorError(
            name, f"has {len(values)} values in '{field}' but shape {shape_text(shape)} needs {count}"
        )
    if spec.datatype is DataType.BYTES:
        return np.fromiter(values, dtype=object, count=count).reshape(shape)
    array = np.array(values, dtype=FIELD_DTYPE[field])  # C fast path over the repeated field
    bounds = TYPED_RANGE.get(spec.datatype)
    if bounds is not None:
        lo, hi = bounds
        bad = (array < lo) | (array > hi)
        if count and bad.any():
            at = int(np.flatnonzero(bad)[0])
            raise TensorError(
                name,
                f"value {int(array[at])} at element {at} is out of range for "
                f"{spec.datatype.value} [{lo}, {hi}]",
            )
        array = array.astype(spec.datatype.numpy_dtype)
    return array.reshape(shape)
