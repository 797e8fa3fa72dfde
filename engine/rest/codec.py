"""The REST tensor codec: a V2 JSON (or binary tensor data) request body -> arrays, and back.

A request body is either all JSON, or — Triton's binary tensor data extension — a JSON
header of ``Inference-Header-Content-Length`` bytes followed by the inputs' binary data,
one after another in the order of the header's ``inputs`` that carry a
``binary_data_size`` parameter. Binary data is little-endian and row-major; a BYTES
element is a 4-byte little-endian length and then that many bytes; a BOOL is one byte.
JSON ``data`` is the tensor's elements flattened in row-major order (nested lists are
flattened too); BYTES elements are strings.

An output is answered in binary when the request's output entry says
``parameters: {binary_data: true}``, or when it names no outputs (or names one without
that parameter) and the request's parameters say ``binary_data_output: true``.

Every check raises ``TensorError`` naming the tensor (or ``InvalidRequest``), so the
status table answers 400. Shapes and sizes are checked before any array is allocated.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from engine.errors import InvalidRequest, TensorError, Unimplemented
from engine.serving.shapes import checked_shape
from engine.tensors import DataType, TensorSpec

_LENGTH = struct.Struct("<I")
_NAME_CLIP = 100
UNSUPPORTED_OUTPUT_PARAMETERS: Final = ("shared_memory_region", "classification")
_WIRE: Final = {d: d.numpy_dtype.newbyteorder("<") for d in DataType if d is not DataType.BYTES}
_RANGE: Final = {
    d: (int(np.iinfo(d.numpy_dtype).min), int(np.iinfo(d.numpy_dtype).max))
    for d in DataType
    if d.numpy_dtype.kind in "iu"
}


@dataclass(frozen=True, slots=True)
class RestLimits:
    max_elements: int = 16_777_216
    max_request_bytes: int = 64 * 1024 * 1024


def clip(name: object) -> str:
    text = str(name)
    return text if len(text) <= _NAME_CLIP else text[:_NAME_CLIP] + "…"


@dataclass(slots=True)
class RestRequest:
    """An inference request body as parsed: its JSON header and the binary data after it."""

    header: dict[str, Any]
    blob: memoryview

    @property
    def request_id(self) -> str:
        value = self.header.get("id", "")
        return value if isinstance(value, str) else str(value)

    def wants_binary(self) -> bool:
        """Whether any output is asked for as binary data (see ``requested_outputs``)."""
        default = self.parameters().get("binary_data_output", False) is True
        asked = self.header.get("outputs")
        if not isinstance(asked, list) or not asked:
            return default
        for output in asked:
            params = output.get("parameters") if isinstance(output, dict) else None
            if (params.get("binary_data", default) if isinstance(params, dict) else default) is True:
                return True
        return False

    def parameters(self) -> dict[str, Any]:
        params = self.header.get("parameters") or {}
        if not isinstance(params, dict):
            raise InvalidRequest("'parameters' must be an object")
        return params


def parse_request(body: bytes, header_length: str | None, limits: RestLimits) -> RestRequest:
    """Split and parse a request body; ``header_length`` is ``Inference-Header-Content-Length``."""
    if len(body) > limits.max_request_bytes:
        raise InvalidRequest(f"request is {len(body)} bytes, above the limit of {limits.max_request_bytes}")
    view = memoryview(body)
    if header_length is None:
        head, blob = view, view[len(view) :]
    else:
        try:
            size = int(header_length)
        except ValueError:
            raise InvalidRequest("Inference-Header-Content-Length is not a number") from None
        if not 0 <= size <= len(body):
            raise InvalidRequest(
                f"Inference-Header-Content-Length {size} is outside the body's {len(body)} bytes"
            )
        head, blob = view[:size], view[size:]
    try:
        header = json.loads(bytes(head))
    except (ValueError, RecursionError):
        raise InvalidRequest("request body is not valid JSON") from None
    if not isinstance(header, dict):
        raise InvalidRequest("request body must be a JSON object")
    return RestRequest(header, blob)


def decode_inputs(
    request: RestRequest, expected: Sequence[TensorSpec], limits: RestLimits
) -> list[np.ndarray]:
    """The request's inputs as arrays in ``expected`` order (see the module docstring)."""
    inputs = request.header.get("inputs")
    if not isinstance(inputs, list):
        raise InvalidRequest("'inputs' must be a list of tensors")
    by_name: dict[str, dict[str, Any]] = {}
    offsets: dict[str, tuple[int, int]] = {}
    offset = 0
    blob = request.blob
    for tensor in inputs:
        if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
            raise InvalidRequest("every input must be an object with a 'name'")
        name = tensor["name"]
        if name in by_name:
            raise TensorError(clip(name), "input given more than once")
        by_name[name] = tensor
        params = tensor.get("parameters") or {}
        if not isinstance(params, dict):
            raise TensorError(clip(name), "'parameters' must be an object")
        if "shared_memory_region" in params:
            raise Unimplemented(
                f"input '{clip(name)}': shared memory is not supported; send the data in the request",
                tensor=clip(name),
            )
        if "binary_data_size" in params:
            size = params["binary_data_size"]
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise TensorError(clip(name), "binary_data_size must be a non-negative integer")
            if offset + size > len(blob):
                raise TensorError(
                    clip(name),
                    f"binary_data_size {size} runs past the end of the binary data "
                    f"({len(blob) - offset} bytes left)",
                )
            offsets[name] = (offset, size)
            offset += size
    if offset != len(blob):
        raise InvalidRequest(
            f"{len(blob) - offset} bytes of binary data after the inputs' binary_data_size bytes"
        )
    declared = {spec.name for spec in expected}
    for name in by_name:
        if name not in declared:
            names = ", ".join(s.name for s in expected) or "none"
            raise TensorError(clip(name), f"is not an input of this model (inputs: {names})")
    arrays: list[np.ndarray] = []
    for spec in expected:
        tensor = by_name.get(spec.name)
        if tensor is None:
            raise TensorError(
                spec.name, f"missing: the model needs it ({spec.datatype.value} {spec.shape_text()})"
            )
        shape, count = _checked_shape(tensor, spec, limits)
        where = offsets.get(spec.name)
        if where is not None:
            if "data" in tensor:
                raise TensorError(spec.name, "has both 'data' and binary_data_size; give one")
            start, size = where
            arrays.append(_from_binary(spec, bytes(blob[start : start + size]), shape, count))
        else:
            arrays.append(_from_json(spec, tensor.get("data"), shape, count))
    return arrays


def _checked_shape(
    tensor: dict[str, Any], spec: TensorSpec, limits: RestLimits
) -> tuple[tuple[int, ...], int]:
    name = spec.name
    datatype = tensor.get("datatype")
    if datatype != spec.datatype.value:
        raise TensorError(
            name, f"datatype '{clip(datatype)}' does not match the declared {spec.datatype.value}"
        )
    raw_shape = tensor.get("shape")
    if not isinstance(raw_shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) for d in raw_shape
    ):
        raise TensorError(name, "'shape' must be a list of integers")
    shape = tuple(raw_shape)
    count = checked_shape(name, shape, spec, limits.max_elements)
    return shape, count


def _from_binary(spec: TensorSpec, data: bytes, shape: tuple[int, ...], count: int) -> np.ndarray:
    if spec.datatype is DataType.BYTES:
        return _split_bytes(spec.name, data, count).reshape(shape)
    wire = _WIRE[spec.datatype]
    want = count * wire.itemsize
    if len(data) != want:
        raise TensorError(
            spec.name,
            f"binary data is {len(data)} bytes but shape {list(shape)} of {spec.datatype.value} "
            f"needs {want} bytes",
        )
    array = np.frombuffer(data, dtype=wire)
    if spec.datatype is DataType.BOOL and count and int(array.view(np.uint8).max()) > 1:
        raise TensorError(spec.name, "BOOL binary data has a byte that is not 0 or 1")
    return array.reshape(shape)


def _split_bytes(name: str, data: bytes, count: int) -> np.ndarray:
    out = np.empty(count, dtype=object)
    offset, size = 0, len(data)
    for index in range(count):
        if offset + 4 > size:
            raise TensorError(name, f"BYTES binary data ends inside the length of element {index} of {count}")
        length = _LENGTH.unpack_from(data, offset)[0]
        offset += 4
        if offset + length > size:
            raise TensorError(
                name, f"BYTES element {index} declares {length} bytes but {size - offset} remain"
            )
        out[index] = data[offset : offset + length]
        offset += length
    if offset != size:
        raise TensorError(name, f"BYTES binary data has {size - offset} bytes left after {count} elements")
    return out


def _from_json(spec: TensorSpec, data: Any, shape: tuple[int, ...], count: int) -> np.ndarray:
    name = spec.name
    if data is None:
        raise TensorError(name, f"has no data: shape {list(shape)} needs {count} values")
    flat = _flatten(data) if isinstance(data, list) else [data]
    if len(flat) != count:
        raise TensorError(name, f"has {len(flat)} values in 'data' but shape {list(shape)} needs {count}")
    datatype = spec.datatype
    if datatype is DataType.BYTES:
        out = np.empty(count, dtype=object)
        for index, value in enumerate(flat):
            if not isinstance(value, str):
                raise TensorError(name, f"BYTES element {index} is not a string")
            out[index] = value.encode()
        return out.reshape(shape)
    if datatype is DataType.BOOL:
        if not all(isinstance(v, bool) for v in flat):
            raise TensorError(name, "BOOL data must be true or false")
        return np.array(flat, dtype=np.bool_).reshape(shape)
    if any(isinstance(v, (bool, str)) or not isinstance(v, (int, float)) for v in flat):
        raise TensorError(name, f"{datatype.value} data must be numbers")
    if datatype.is_float:
        return np.array(flat, dtype=datatype.numpy_dtype).reshape(shape)
    if any(isinstance(v, float) for v in flat):
        raise TensorError(name, f"{datatype.value} data must be integers")
    lo, hi = _RANGE[datatype]
    for index, value in enumerate(flat):
        if not lo <= value <= hi:
            raise TensorError(name, f"value {value} at element {index} is out of range for {datatype.value}")
    return np.array(flat, dtype=datatype.numpy_dtype).reshape(shape)


def _flatten(data: list[Any]) -> list[Any]:
    if not any(isinstance(v, list) for v in data):
        return data
    out: list[Any] = []
    stack = [iter(data)]
    while stack:
        for value in stack[-1]:
            if isinstance(value, list):
                stack.append(iter(value))
                break
            out.append(value)
        else:
            stack.pop()
    return out


@dataclass(frozen=True, slots=True)
class OutputChoice:
    name: str
    binary: bool


def requested_outputs(request: RestRequest, available: Sequence[TensorSpec]) -> tuple[OutputChoice, ...]:
    """The outputs to answer, in the order asked (every output when none is named), and how."""
    default = request.parameters().get("binary_data_output", False) is True
    asked = request.header.get("outputs")
    if asked is None or asked == []:
        return tuple(OutputChoice(spec.name, default) for spec in available)
    if not isinstance(asked, list):
        raise InvalidRequest("'outputs' must be a list")
    known = {spec.name for spec in available}
    chosen: list[OutputChoice] = []
    seen: set[str] = set()
    for output in asked:
        if not isinstance(output, dict) or not isinstance(output.get("name"), str):
            raise InvalidRequest("every requested output must be an object with a 'name'")
        name = output["name"]
        if name not in known:
            names = ", ".join(s.name for s in available) or "none"
            raise TensorError(clip(name), f"is not an output of this model (outputs: {names})")
        if name in seen:
            raise TensorError(name, "output requested more than once")
        seen.add(name)
        params = output.get("parameters") or {}
        if not isinstance(params, dict):
            raise TensorError(name, "'parameters' must be an object")
        for parameter in UNSUPPORTED_OUTPUT_PARAMETERS:
            if parameter in params:
                raise Unimplemented(
                    f"output '{name}': parameter '{parameter}' is not supported by this server", tensor=name
                )
        binary = params.get("binary_data", default)
        chosen.append(OutputChoice(name, binary is True))
    return tuple(chosen)


def encode_response(
    *,
    model_name: str,
    model_version: str,
    request_id: str,
    outputs: Sequence[tuple[OutputChoice, np.ndarray]],
    parameters: Mapping[str, str] | None = None,
) -> tuple[bytes, int | None]:
    """The response body and, when it carries binary data, the length of its JSON header;
    ``parameters``: response-level parameters (the ``lineage`` a request asked for)."""
    tensors: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for choice, array in outputs:
        datatype = DataType.from_numpy(array.dtype)
        entry: dict[str, Any] = {"name": choice.name, "datatype": datatype.value, "shape": list(array.shape)}
        if choice.binary:
            data = _to_binary(datatype, array)
            entry["parameters"] = {"binary_data_size": len(data)}
            chunks.append(data)
        else:
            entry["data"] = _to_json(datatype, array)
        tensors.append(entry)
    body: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request_id:
        body["id"] = request_id
    if parameters:
        body["parameters"] = dict(parameters)
    body["outputs"] = tensors
    header = json.dumps(body, separators=(",", ":"), allow_nan=True).encode()
    if not chunks:
        return header, None
    return b"".join([header, *chunks]), len(header)


def _to_binary(datatype: DataType, array: np.ndarray) -> bytes:
    if datatype is DataType.BYTES:
        parts: list[bytes] = []
        for value in array.reshape(-1):
            item = value if isinstance(value, bytes) else str(value).encode()
            parts.append(_LENGTH.pack(len(item)))
            parts.append(item)
        return b"".join(parts)
    return np.ascontiguousarray(array, dtype=_WIRE[datatype]).tobytes()


def tensor_json(name: str, array: np.ndarray) -> dict[str, Any]:
    """One tensor as a V2 JSON output tensor."""
    datatype = DataType.from_numpy(array.dtype)
    return {
        "name": name,
        "datatype": datatype.value,
        "shape": list(array.shape),
        "data": _to_json(datatype, array),
    }


def _to_json(datatype: DataType, array: np.ndarray) -> list[Any]:
    flat = array.reshape(-1)
    if datatype is DataType.BYTES:
        return [v.decode(errors="replace") if isinstance(v, bytes) else str(v) for v in flat]
    values: list[Any] = flat.tolist()
    return values
