"""A ``ModelInferRequest`` as the inference core sees it: ``GrpcInferCall`` (an ``InferCall``).

Decoding and encoding are the tensor codec's (``engine.protocol.codec``); the deadline and
the metadata are grpc.aio's. The span attributes follow OpenTelemetry's RPC conventions
(``rpc.system``, ``rpc.service``, ``rpc.method``, ``rpc.grpc.status_code``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import grpc
import numpy as np

from engine.errors import Status
from engine.protocol import codec
from engine.protocol.generated.inference import grpc_service_pb2 as pb
from engine.protocol.status import GRPC_CODES
from engine.serving import Headers, InferResult, SpanAttributes
from engine.tensors import TensorSpec

SERVICE: Final = "inference.GRPCInferenceService"

_STATUS_ATTRIBUTES: Final[dict[Status, SpanAttributes]] = {
    status: {"rpc.grpc.status_code": code.value[0]} for status, code in GRPC_CODES.items()
}


class GrpcInferCall:
    """One ``ModelInfer`` request (or one message of a ``ModelStreamInfer`` stream)."""

    __slots__ = ("_attributes", "_context", "_limits", "_raw", "_request", "_wanted", "protocol", "run_ns")

    def __init__(
        self,
        request: pb.ModelInferRequest,
        context: grpc.aio.ServicerContext[Any, Any],
        limits: codec.CodecLimits,
        *,
        service: str = SERVICE,
        method: str = "ModelInfer",
        protocol: str = "grpc",
        raw: bool | None = None,
    ) -> None:
        """``raw``: answer in raw contents (True) or typed contents (False); None = as the request
        was sent (typed contents in, typed out)."""
        self._request = request
        self._context = context
        self._limits = limits
        self._wanted: tuple[str, ...] = ()
        self._attributes: SpanAttributes = _span_attributes(service, method)
        self._raw = raw
        self.protocol = protocol
        self.run_ns = 0
        """How long the plan ran, once encoded (what ``Explain`` reports)."""

    @property
    def graph(self) -> str:
        return self._request.model_name

    @property
    def version(self) -> str:
        return self._request.model_version

    @property
    def request_id(self) -> str:
        return self._request.id

    def time_remaining(self) -> float | None:
        remaining: float | None = self._context.time_remaining()
        return remaining

    def headers(self) -> Headers:
        return tuple(self._context.invocation_metadata() or ())

    def span_attributes(self) -> SpanAttributes:
        return self._attributes

    def status_attributes(self, status: Status) -> SpanAttributes:
        return _STATUS_ATTRIBUTES[status]

    def decode(self, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> list[np.ndarray]:
        arrays = codec.decode_inputs(self._request, inputs, self._limits)
        self._wanted = codec.requested_outputs(self._request, outputs)
        return list(arrays.values())

    def encode(self, result: InferResult) -> pb.ModelInferResponse:
        self.run_ns = result.run_ns
        # an output an optional node left out (it failed) is absent from the response
        chosen = [(name, result.output(name)) for name in self._wanted]
        response = codec.encode_response(
            model_name=result.graph,
            model_version=result.version,
            request_id=result.request_id,
            outputs=[(name, array) for name, array in chosen if array is not None],
            raw=codec.wants_raw(self._request) if self._raw is None else self._raw,
        )
        if LINEAGE_PARAMETER in self._request.parameters and _asked(
            self._request.parameters[LINEAGE_PARAMETER]
        ):
            for key, value in result.lineage.items():
                response.parameters[key].string_param = value
        return response


LINEAGE_PARAMETER: Final = "lineage"
"""A request parameter: true asks for the models behind the answer as response parameters
(``lineage.<node>.sha256``, ``lineage.<node>.source``; docs/model-sources.md)."""


def _asked(parameter: pb.InferParameter) -> bool:
    which = parameter.WhichOneof("parameter_choice")
    if which == "bool_param":
        return parameter.bool_param
    if which == "string_param":
        return parameter.string_param.lower() in ("true", "1", "yes")
    return which in ("int64_param", "uint64_param") and getattr(parameter, which) != 0


_ATTRIBUTES: dict[tuple[str, str], SpanAttributes] = {}


def _span_attributes(service: str, method: str) -> SpanAttributes:
    found = _ATTRIBUTES.get((service, method))
    if found is None:
        found = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method}
        _ATTRIBUTES[(service, method)] = found
    return found
