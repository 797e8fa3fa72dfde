"""Request-level codec: parsing bytes, which outputs to answer, and raw or typed.

``parse_message`` is meant as the request deserializer of every RPC (the server
registers handlers with a pass-through deserializer), so bytes that do not
parse answer INVALID_ARGUMENT rather than grpc's UNKNOWN.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from google.protobuf.message import DecodeError, Message

from engine.errors import InvalidRequest, TensorError, Unimplemented
from engine.protocol.codec_decode import SHM_PARAMETER, clip_name, names_text
from engine.protocol.codec_tables import DEFAULT_LIMITS, CodecLimits
from engine.protocol.generated.inference import grpc_service_pb2 as pb
from engine.serving import parameters
from engine.serving.parameters import ParameterValue
from engine.tensors import TensorSpec

M = TypeVar("M", bound=Message)


def parse_message(message_type: type[M], data: bytes, limits: CodecLimits = DEFAULT_LIMITS) -> M:
    """Parse ``data`` as ``message_type``; InvalidRequest if it is too large or does not parse.

    Meant as the request deserializer of every RPC, so that bytes that do not
    parse answer INVALID_ARGUMENT rather than grpc's UNKNOWN.
    """
    if len(data) > limits.max_request_bytes:
        raise InvalidRequest(
            f"request is {len(data)} bytes, above the limit of {limits.max_request_bytes} bytes"
        )
    message = message_type()
    try:
        message.ParseFromString(data)
    except (DecodeError, ValueError, TypeError, RuntimeError, RecursionError) as exc:
        raise InvalidRequest(f"request is not a valid {message_type.DESCRIPTOR.name}") from exc
    return message


def parse_infer_request(data: bytes, limits: CodecLimits = DEFAULT_LIMITS) -> pb.ModelInferRequest:
    """Parse a serialized ModelInferRequest; InvalidRequest if it does not parse."""
    return parse_message(pb.ModelInferRequest, data, limits)


def check_parameters(request: pb.ModelInferRequest) -> float | None:
    """The request's parameters as plain values, checked by the one policy every door applies
    (``engine.serving.parameters``); returns the ``timeout`` in seconds, or None."""
    if not request.parameters:
        return None
    values: dict[str, ParameterValue] = {}
    for key, value in request.parameters.items():
        kind = value.WhichOneof("parameter_choice")
        values[key] = None if kind is None else getattr(value, kind)
    return parameters.check_parameters(values)


def wants_raw(request: pb.ModelInferRequest) -> bool:
    """Whether to answer in ``raw_output_contents`` (True) or typed ``contents``.

    Raw, unless the client sent typed contents and no raw contents: a client
    that writes typed contents can be expected to read them (DESIGN §3).
    A request parameter ``binary_data_output`` (bool) overrides this. The V2
    spec defines that parameter only for HTTP/REST (binary tensor data
    extension); gRPC clients such as tritonclient never send it, so honouring
    it changes nothing for them and lets hand-written clients choose.
    """
    if "binary_data_output" in request.parameters:
        param = request.parameters["binary_data_output"]
        if param.WhichOneof("parameter_choice") == "bool_param":
            return param.bool_param
    if request.raw_input_contents:
        return True
    return not any(t.HasField("contents") and t.contents.ListFields() for t in request.inputs)


def requested_outputs(request: pb.ModelInferRequest, available: Sequence[TensorSpec]) -> tuple[str, ...]:
    """Names of the outputs asked for, in the order asked; every output when none is named."""
    if not request.outputs:
        return tuple(spec.name for spec in available)
    known = {spec.name for spec in available}
    names: list[str] = []
    seen: set[str] = set()
    for output in request.outputs:
        name = output.name
        if name not in known:
            raise TensorError(
                clip_name(name),
                f"is not an output of this model (outputs: {names_text([s.name for s in available])})",
            )
        if name in seen:
            raise TensorError(name, "output requested more than once")
        for parameter in (SHM_PARAMETER, "classification"):
            if parameter in output.parameters:
                raise Unimplemented(
                    f"output '{name}': parameter '{parameter}' is not supported by this server", tensor=name
                )
        seen.add(name)
        names.append(name)
    return tuple(names)
