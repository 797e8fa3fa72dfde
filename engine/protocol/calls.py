"""A ``ModelInferRequest`` as the inference core sees it: ``GrpcInferCall`` (an ``InferCall``).

Decoding and encoding are the tensor codec's (``engine.protocol.codec``); the deadline and
the metadata are grpc.aio's. The span attributes follow OpenTelemetry's RPC conventions, on
every request span, whatever its outcome: by default those of semantic conventions 1.37 and
before (``rpc.system``, ``rpc.service``, ``rpc.method``, ``rpc.grpc.status_code``), which the
ecosystem's dashboards read; with ``OTEL_SEMCONV_STABILITY_OPT_IN=rpc`` the stable ones
(``rpc.system.name``, ``rpc.method`` as ``package.Service/Method``, ``rpc.response.status_code``
and ``error.type`` on failures), with ``rpc/dup`` both. The span is named ``package.Service/Method``
in either case.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
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


def semconv(environ: Mapping[str, str]) -> tuple[bool, bool]:
    """(emit the pre-1.38 RPC attributes, emit the stable ones), from ``OTEL_SEMCONV_STABILITY_OPT_IN``."""
    chosen = {v.strip() for v in environ.get("OTEL_SEMCONV_STABILITY_OPT_IN", "").split(",")}
    if "rpc/dup" in chosen:
        return True, True
    return ("rpc" not in chosen), ("rpc" in chosen)


def rpc_attributes(service: str, method: str, *, old: bool, new: bool) -> SpanAttributes:
    """The request span's RPC attributes at its start."""
    found: dict[str, str | int] = {}
    if old:
        found.update({"rpc.system": "grpc", "rpc.service": service, "rpc.method": method})
    if new:  # with both, rpc.method takes the stable, fully qualified form
        found.update({"rpc.system.name": "grpc", "rpc.method": f"{service}/{method}"})
    return found


def status_attributes(status: Status, *, old: bool, new: bool) -> SpanAttributes:
    """The request span's RPC attributes for its outcome (every outcome, OK included)."""
    code = GRPC_CODES[status]
    found: dict[str, str | int] = {}
    if old:
        found["rpc.grpc.status_code"] = code.value[0]
    if new:
        found["rpc.response.status_code"] = code.name
        if status is not Status.OK:
            found["error.type"] = code.name
    return found


_OLD, _NEW = semconv(os.environ)
_STATUS_ATTRIBUTES: Final[dict[Status, SpanAttributes]] = {
    status: status_attributes(status, old=_OLD, new=_NEW) for status in GRPC_CODES
}


class GrpcInferCall:
    """One ``ModelInfer`` request (or one message of a ``ModelStreamInfer`` stream)."""

    __slots__ = (
        "_attributes",
        "_context",
        "_deadline_set",
        "_limits",
        "_raw",
        "_request",
        "_timeout",
        "_wanted",
        "graph",
        "protocol",
        "request_id",
        "run_ns",
        "version",
    )

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
        # read once: the core asks for each several times a call
        self.graph: str = request.model_name
        self.version: str = request.model_version
        self.request_id: str = request.id
        self._context = context
        self._limits = limits
        self._wanted: tuple[str, ...] = ()
        self._attributes: SpanAttributes = _span_attributes(service, method)
        self._raw = raw
        # With parameters, the arrival time, so a ``timeout`` parameter counts from it; the deadline
        # it sets once ``decode`` has read it.
        self._timeout: float | None = time.monotonic() if request.parameters else None
        self._deadline_set = False
        self.protocol = protocol
        self.run_ns = 0
        """How long the plan ran, once encoded (what ``Explain`` reports)."""

    def time_remaining(self) -> float | None:
        """The gRPC deadline's time left, bounded by the request's ``timeout`` parameter (read in
        ``decode``: admission waits by the gRPC deadline alone)."""
        # grpc's stub says float, but it is None without a deadline (compiled code checks the type)
        context: Any = self._context
        remaining: float | None = context.time_remaining()
        if self._timeout is not None and self._deadline_set:
            left = self._timeout - time.monotonic()
            if remaining is None or left < remaining:
                return max(left, 0.0)
        return remaining

    def headers(self) -> Headers:
        return tuple(self._context.invocation_metadata() or ())

    def span_attributes(self) -> SpanAttributes:
        return self._attributes

    def status_attributes(self, status: Status) -> SpanAttributes:
        return _STATUS_ATTRIBUTES[status]

    def decode(self, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> list[np.ndarray]:
        if self._timeout is not None:  # every parameter checked (a timeout read) before any tensor
            timeout = codec.check_parameters(self._request)
            self._deadline_set = timeout is not None
            if timeout is not None:
                self._timeout += timeout  # arrival + timeout: an absolute deadline
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
        # a bool (engine.serving.parameters checked it in decode)
        if (
            LINEAGE_PARAMETER in self._request.parameters
            and self._request.parameters[LINEAGE_PARAMETER].bool_param
        ):
            for key, value in result.lineage.items():
                response.parameters[key].string_param = value
        return response


LINEAGE_PARAMETER: Final = "lineage"
"""A request parameter: true asks for the models behind the answer as response parameters
(``lineage.<node>.sha256``, ``lineage.<node>.source``; docs/model-sources.md)."""


_ATTRIBUTES: dict[tuple[str, str], SpanAttributes] = {}


def _span_attributes(service: str, method: str) -> SpanAttributes:
    found = _ATTRIBUTES.get((service, method))
    if found is None:
        found = rpc_attributes(service, method, old=_OLD, new=_NEW)
        _ATTRIBUTES[(service, method)] = found
    return found
