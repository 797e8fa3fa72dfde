"""Request-level codec: parsing bytes, which outputs to answer, and raw or typed.

``parse_message`` is meant as the request deserializer of every RPC (the server
registers handlers with a pass-through deserializer), so bytes that do not
parse answer INVALID_ARGUMENT rather than grpc's UNKNOWN.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, TypeVar

from google.protobuf.message import DecodeError, Message

from engine.errors import InvalidRequest, TensorError, Unimplemented
from engine.protocol.codec_decode import SHM_PARAMETER, clip_name, names_text
from engine.protocol.codec_tables import DEFAULT_LIMITS, CodecLimits
from engine.protocol.generated.inference import grpc_service_pb2 as pb
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


MAX_PARAMETERS: Final = 64
MAX_PARAMETER_KEY_CHARS: Final = 256
MAX_PARAMETER_VALUE_BYTES: Final = 4096
_NOT_IMPLEMENTED = {
    "sequence_id": "sequences (stateful models) are not implemented: every graph call is stateless",
    "sequence_start": "sequences (stateful models) are not implemented: every graph call is stateless",
    "sequence_end": "sequences (stateful models) are not implemented: every graph call is stateless",
    "priority": "request priorities are not implemented: every call is admitted in arrival order",
}
_BOOLEANS = ("binary_data_output", "triton_enable_empty_final_response")
"""``triton_enable_empty_final_response`` (perf_analyzer sends it) asks a decoupled model for an
empty last response; graphs are not decoupled (every response is the final one), so it changes
nothing, as for Triton's own non-decoupled models."""
SUPPORTED_PARAMETERS: Final = ("binary_data_output", "timeout", "triton_enable_empty_final_response")


def check_parameters(request: pb.ModelInferRequest) -> float | None:
    """Every request-level parameter is one this server implements, small, and of its type.

    Returns the ``timeout`` parameter in seconds (Triton's schedule policy: int64 microseconds),
    or None. A parameter we do not implement is refused naming it, never ignored; a parameter
    that asks for the default (``sequence_id`` 0 or "", ``sequence_start``/``_end`` false,
    ``priority`` 0) means the same as its absence and is accepted."""
    parameters = request.parameters
    if not parameters:
        return None
    if len(parameters) > MAX_PARAMETERS:
        raise InvalidRequest(f"request has {len(parameters)} parameters, above the limit of {MAX_PARAMETERS}")
    timeout: float | None = None
    refused: list[str] = []
    for key, value in parameters.items():
        name = clip_name(key)
        if len(key) > MAX_PARAMETER_KEY_CHARS:
            raise InvalidRequest(
                f"parameter '{name}': name is {len(key)} characters, above {MAX_PARAMETER_KEY_CHARS}"
            )
        kind = value.WhichOneof("parameter_choice")
        if kind == "string_param" and len(value.string_param) > MAX_PARAMETER_VALUE_BYTES:
            raise InvalidRequest(
                f"parameter '{name}': value is {len(value.string_param)} characters, "
                f"above {MAX_PARAMETER_VALUE_BYTES}"
            )
        if key in _BOOLEANS:
            if kind != "bool_param":
                raise InvalidRequest(f"parameter '{key}' must be a bool, not {_kind(kind)}")
        elif key == "timeout":
            if kind not in ("int64_param", "uint64_param"):
                raise InvalidRequest(
                    f"parameter 'timeout' must be an integer number of microseconds, not {_kind(kind)}"
                )
            micros = getattr(value, kind)
            if micros < 0:
                raise InvalidRequest(f"parameter 'timeout' must not be negative, got {micros}")
            timeout = micros / 1e6 if micros else None  # 0: no timeout, as Triton reads it
        elif key in _NOT_IMPLEMENTED:
            if not _is_default(value, kind):
                refused.append(key)
        else:
            supported = ", ".join(SUPPORTED_PARAMETERS)
            raise InvalidRequest(
                f"parameter '{name}' is not implemented by this server (request parameters it "
                f"reads: {supported}); remove it"
            )
    if refused:
        refused.sort(key=list(_NOT_IMPLEMENTED).index)
        named = ", ".join(f"'{key}'" for key in refused)
        plural = "s" if len(refused) > 1 else ""
        raise InvalidRequest(f"parameter{plural} {named}: {_NOT_IMPLEMENTED[refused[0]]}")
    return timeout


def _is_default(value: pb.InferParameter, kind: str | None) -> bool:
    if kind is None:
        return True
    return not getattr(value, kind)  # 0, "", false


def _kind(kind: str | None) -> str:
    return (kind or "unset").removesuffix("_param")


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
