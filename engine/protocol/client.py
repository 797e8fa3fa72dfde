"""A small synchronous client for the CLI (``engine infer``, ``engine explain``, …).

It speaks the same protocol as any V2 client, over our own generated stubs, and
converts JSON-ish Python values to tensors using the graph's ModelMetadata.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TypeVar

import grpc
import numpy as np
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from engine.protocol.generated.engine.v1 import engine_pb2 as epb
from engine.protocol.generated.inference import grpc_service_pb2 as pb
from engine.tensors import DataType

R = TypeVar("R", bound=Message)


class RemoteError(Exception):
    """A call the server answered with a non-OK status: ``code`` is the status name."""

    def __init__(self, code: str, details: str) -> None:
        super().__init__(f"{code}: {details}")
        self.code = code
        self.details = details


class EngineClient:
    def __init__(
        self, url: str, timeout: float = 30.0, *, token: str | None = None, ca_file: str | None = None
    ) -> None:
        """``token``: sent as ``authorization: Bearer …``; ``ca_file``: connect with TLS, trusting it."""
        if ca_file:
            with open(ca_file, "rb") as handle:
                credentials = grpc.ssl_channel_credentials(root_certificates=handle.read())
            self._channel = grpc.secure_channel(url, credentials)
        else:
            self._channel = grpc.insecure_channel(url)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else None
        self.timeout = timeout

    def close(self) -> None:
        self._channel.close()

    def _call(self, service: str, method: str, request: Message, response_type: type[R]) -> R:
        call: grpc.UnaryUnaryMultiCallable[Message, R] = self._channel.unary_unary(
            f"/{service}/{method}",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=response_type.FromString,
        )
        try:
            return call(request, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise RemoteError(exc.code().name, exc.details() or "") from None

    def metadata(self, graph: str, version: str = "") -> pb.ModelMetadataResponse:
        return self._call(
            "inference.GRPCInferenceService",
            "ModelMetadata",
            pb.ModelMetadataRequest(name=graph, version=version),
            pb.ModelMetadataResponse,
        )

    def build_request(
        self, graph: str, values: Mapping[str, object], version: str = ""
    ) -> pb.ModelInferRequest:
        """A ModelInferRequest with typed contents, datatypes and shapes taken from ModelMetadata."""
        meta = self.metadata(graph, version)
        declared = {t.name: t for t in meta.inputs}
        request = pb.ModelInferRequest(model_name=graph, model_version=version)
        for name, value in values.items():
            if name not in declared:
                raise ValueError(f"graph '{graph}' has no input '{name}' (inputs: {', '.join(declared)})")
            datatype = DataType.parse(declared[name].datatype)
            try:
                array = to_array(value, datatype)
            except ValueError as exc:
                raise ValueError(f"input '{name}': {exc}") from None
            tensor = request.inputs.add(name=name, datatype=datatype.value, shape=list(array.shape))
            _fill(tensor.contents, array, datatype)
        return request

    def infer(self, request: pb.ModelInferRequest) -> dict[str, np.ndarray]:
        response = self._call("inference.GRPCInferenceService", "ModelInfer", request, pb.ModelInferResponse)
        return decode_outputs(response)

    def explain(
        self, request: pb.ModelInferRequest, include_tensors: bool = True, show_redacted: bool = False
    ) -> epb.ExplainResponse:
        return self._call(
            "engine.v1.Engine",
            "Explain",
            epb.ExplainRequest(request=request, include_tensors=include_tensors, show_redacted=show_redacted),
            epb.ExplainResponse,
        )

    def admin(self, method: str, request: Message, response_type: type[R]) -> R:
        return self._call("engine.v1.Engine", method, request, response_type)


def to_array(value: object, datatype: DataType) -> np.ndarray:
    """``value`` (nested lists, as JSON gives) as an array of ``datatype``; ValueError naming the
    problem when its rows differ in length or its values do not fit."""
    _check_rectangular(value)
    if datatype is DataType.BYTES:
        array = np.array(value, dtype=object)
        flat = [v.encode() if isinstance(v, str) else bytes(v) for v in array.reshape(-1)]
        return np.array(flat, dtype=object).reshape(array.shape)
    try:
        return np.array(value, dtype=datatype.numpy_dtype)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"values do not fit {datatype.value}: {json.dumps(value)[:80]}") from None


def _check_rectangular(value: object, where: str = "") -> int | None:
    """The length of a nested list's rows, checked level by level; ValueError for a ragged one."""
    if not isinstance(value, list):
        return None
    inner = [_check_rectangular(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if any(n != inner[0] for n in inner):
        sizes = ", ".join("a value" if n is None else f"{n}" for n in inner[:6])
        raise ValueError(
            f"rows of {where or 'the array'} differ in length ({sizes}); a tensor needs rows of one size"
        )
    return len(value)


def plain(message: Message) -> dict[str, object]:
    """A message as JSON-ready values: numbers stay numbers (protobuf's JSON writes 64-bit
    integers as strings), enums by name, only the fields that are set."""
    out: dict[str, object] = {}
    for fd, value in message.ListFields():
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            value_fd = fd.message_type.fields_by_name["value"]
            out[fd.name] = {k: _plain_value(value_fd, v) for k, v in value.items()}
        elif fd.is_repeated:
            out[fd.name] = [_plain_value(fd, v) for v in value]
        else:
            out[fd.name] = _plain_value(fd, value)
    return out


def _plain_value(fd: FieldDescriptor, value: object) -> object:
    if isinstance(value, Message):
        return plain(value)
    if fd.enum_type is not None and isinstance(value, int):
        return fd.enum_type.values_by_number[value].name
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return value


_TYPED_FIELD = {
    DataType.BOOL: "bool_contents",
    DataType.INT8: "int_contents",
    DataType.INT16: "int_contents",
    DataType.INT32: "int_contents",
    DataType.INT64: "int64_contents",
    DataType.UINT8: "uint_contents",
    DataType.UINT16: "uint_contents",
    DataType.UINT32: "uint_contents",
    DataType.UINT64: "uint64_contents",
    DataType.FP32: "fp32_contents",
    DataType.FP64: "fp64_contents",
    DataType.BYTES: "bytes_contents",
}


def _fill(contents: pb.InferTensorContents, array: np.ndarray, datatype: DataType) -> None:
    if datatype is DataType.FP16:
        raise ValueError("FP16 inputs must be sent raw; use a V2 client such as tritonclient")
    getattr(contents, _TYPED_FIELD[datatype]).extend(array.reshape(-1).tolist())


def decode_outputs(response: pb.ModelInferResponse) -> dict[str, np.ndarray]:
    """Outputs as numpy arrays, from raw or typed contents."""
    result: dict[str, np.ndarray] = {}
    for i, tensor in enumerate(response.outputs):
        datatype = DataType.parse(tensor.datatype)
        shape = tuple(tensor.shape)
        if response.raw_output_contents:
            raw = response.raw_output_contents[i]
            if datatype is DataType.BYTES:
                items, pos = [], 0
                while pos < len(raw):
                    size = int.from_bytes(raw[pos : pos + 4], "little")
                    items.append(raw[pos + 4 : pos + 4 + size])
                    pos += 4 + size
                result[tensor.name] = np.array(items, dtype=object).reshape(shape)
            else:
                result[tensor.name] = np.frombuffer(raw, dtype=datatype.numpy_dtype).reshape(shape)
        else:
            values = list(getattr(tensor.contents, _TYPED_FIELD[datatype]))
            dtype = object if datatype is DataType.BYTES else datatype.numpy_dtype
            result[tensor.name] = np.array(values, dtype=dtype).reshape(shape)
    return result
