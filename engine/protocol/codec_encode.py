"""Response side of the tensor codec: numpy arrays -> ModelInferResponse.

An output's datatype comes from its numpy dtype and its shape from the array.
Raw answers put one ``raw_output_contents`` entry per output, in output order
(little-endian, row-major; BYTES as 4-byte little-endian length + bytes per
element), which is what ``tritonclient``'s ``as_numpy`` reads. Typed answers
fill each output's ``contents`` field for its datatype.

V2 has no typed field for FP16, so a typed answer holding an FP16 output is
sent raw as a whole (the raw and typed forms cannot be mixed in one response).
An array the protocol cannot carry (a dtype with no V2 datatype, a BYTES
element that is neither ``bytes`` nor ``str``) is the producing model's fault:
``ModelContractError`` (INTERNAL).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Final

import numpy as np

from engine.errors import ModelContractError
from engine.protocol.codec_tables import TYPED_FIELD, WIRE_DTYPE
from engine.protocol.generated.inference import grpc_service_pb2 as pb
from engine.tensors import DataType

_pack_length: Final = struct.Struct("<I").pack


_NATIVE: Final[dict[np.dtype, DataType]] = {
    np.dtype(t): d
    for t, d in (
        (np.bool_, DataType.BOOL), (np.uint8, DataType.UINT8), (np.uint16, DataType.UINT16),
        (np.uint32, DataType.UINT32), (np.uint64, DataType.UINT64), (np.int8, DataType.INT8),
        (np.int16, DataType.INT16), (np.int32, DataType.INT32), (np.int64, DataType.INT64),
        (np.float16, DataType.FP16), (np.float32, DataType.FP32), (np.float64, DataType.FP64),
        (np.object_, DataType.BYTES),
    )
}  # fmt: skip
"""The datatypes of native-byte-order dtypes, looked up before the general rules."""


def datatype_of(name: str, array: np.ndarray) -> DataType:
    """The V2 datatype of an output array; ModelContractError if there is none."""
    dtype = array.dtype
    found = _NATIVE.get(dtype)
    if found is not None:
        return found
    if dtype.byteorder == ">":
        dtype = dtype.newbyteorder("=")
    try:
        return DataType.from_numpy(dtype)
    except ValueError as exc:
        raise ModelContractError(
            f"output '{name}' has numpy dtype {array.dtype}, which has no V2 datatype", tensor=name
        ) from exc


def _bytes_elements(name: str, array: np.ndarray) -> list[bytes]:
    elements = array.ravel().tolist()
    for index, element in enumerate(elements):
        if isinstance(element, bytes):
            continue
        if isinstance(element, str):
            elements[index] = element.encode("utf-8")
            continue
        raise ModelContractError(
            f"output '{name}': BYTES element {index} is {type(element).__name__}, not bytes or str",
            tensor=name,
        )
    return elements


def tensor_bytes(name: str, array: np.ndarray, datatype: DataType | None = None) -> bytes:
    """The raw wire form of one tensor (one ``raw_output_contents`` entry)."""
    datatype = datatype or datatype_of(name, array)
    if datatype is DataType.BYTES:
        elements = _bytes_elements(name, array)
        parts: list[bytes] = [b""] * (2 * len(elements))
        try:
            parts[0::2] = [_pack_length(len(element)) for element in elements]
        except struct.error as exc:
            raise ModelContractError(f"output '{name}': a BYTES element exceeds 4 GiB", tensor=name) from exc
        parts[1::2] = elements
        return b"".join(parts)
    if datatype is DataType.BOOL:
        return np.ascontiguousarray(array, dtype=np.bool_).tobytes()
    wire = WIRE_DTYPE[datatype]
    if array.dtype == wire:  # tobytes writes row-major whatever the array's layout
        return array.tobytes()
    return np.ascontiguousarray(array, dtype=wire).tobytes()


def _fill_typed(name: str, array: np.ndarray, datatype: DataType, contents: pb.InferTensorContents) -> None:
    field = TYPED_FIELD[datatype]
    if field is None:  # FP16: callers that cannot go raw get FP32 values (see encode_tensor)
        contents.fp32_contents.extend(array.astype(np.float32).ravel().tolist())
    elif datatype is DataType.BYTES:
        contents.bytes_contents.extend(_bytes_elements(name, array))
    else:
        getattr(contents, field).extend(array.ravel().tolist())


def encode_tensor(name: str, array: np.ndarray, raw: bool = False) -> pb.ModelInferResponse.InferOutputTensor:
    """One output tensor: name, datatype, shape, and typed ``contents`` unless ``raw``.

    With ``raw`` the tensor carries no data; its bytes are ``tensor_bytes(name, array)``.
    Typed FP16 (which V2 cannot express) is written as FP32 values in
    ``fp32_contents`` with datatype FP16: meant for Explain traces, where a
    tensor stands alone and there is no raw slot.
    """
    datatype = datatype_of(name, array)
    tensor = pb.ModelInferResponse.InferOutputTensor(name=name, datatype=datatype.value, shape=array.shape)
    if not raw:
        _fill_typed(name, array, datatype, tensor.contents)
    return tensor


def encode_response(
    *,
    model_name: str,
    model_version: str,
    request_id: str,
    outputs: Sequence[tuple[str, np.ndarray]],
    raw: bool,
) -> pb.ModelInferResponse:
    """The ModelInferResponse carrying ``outputs`` in order, raw or typed (see module docstring)."""
    response = pb.ModelInferResponse(model_name=model_name, model_version=model_version, id=request_id)
    datatypes = [datatype_of(name, array) for name, array in outputs]
    if not raw and DataType.FP16 in datatypes:
        raw = True
    tensors = response.outputs
    for (name, array), datatype in zip(outputs, datatypes, strict=False):  # one datatype per output
        tensor = tensors.add(name=name, datatype=datatype._value_, shape=array.shape)
        if raw:
            response.raw_output_contents.append(tensor_bytes(name, array, datatype))
        else:
            _fill_typed(name, array, datatype, tensor.contents)
    return response
