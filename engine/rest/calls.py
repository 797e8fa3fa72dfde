"""A V2 REST inference request as the inference core sees it: ``HttpInferCall`` (an ``InferCall``).

Decoding and encoding are the REST codec's (``engine.rest.codec``). The deadline is
Triton's ``timeout`` request parameter (microseconds) when given. The span attributes
follow OpenTelemetry's HTTP server conventions (``http.request.method``, ``http.route``,
``http.response.status_code``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Final

import numpy as np

from engine.errors import Status
from engine.rest import codec
from engine.rest.status import HTTP_CODES
from engine.serving import Headers, InferResult, SpanAttributes
from engine.serving.parameters import check_parameters
from engine.tensors import TensorSpec

INFER_ROUTE: Final = "/v2/models/{model}[/versions/{version}]/infer"

_STATUS_ATTRIBUTES: Final[dict[Status, SpanAttributes]] = {
    status: {"http.response.status_code": code} for status, code in HTTP_CODES.items()
}
_SPAN: Final[SpanAttributes] = {"http.request.method": "POST", "http.route": INFER_ROUTE}


class HttpInferCall:
    """One ``POST /v2/models/{model}/infer`` request."""

    __slots__ = (
        "_deadline", "_headers", "_limits", "_lineage", "_request", "_wanted", "graph", "run_ns", "version",
    )  # fmt: skip

    protocol: Final = "http"

    def __init__(
        self,
        graph: str,
        version: str,
        request: codec.RestRequest,
        headers: Mapping[str, str],
        limits: codec.RestLimits,
    ) -> None:
        self.graph = graph
        self.version = version
        self._request = request
        self._headers = headers
        self._limits = limits
        self._wanted: tuple[codec.OutputChoice, ...] = ()
        self.run_ns = 0
        asked = request.parameters()
        timeout = check_parameters(asked)  # the policy every door applies
        self._lineage = asked.get("lineage") is True
        self._deadline: float | None = None if timeout is None else time.monotonic() + timeout

    @property
    def request_id(self) -> str:
        return self._request.request_id

    def time_remaining(self) -> float | None:
        return None if self._deadline is None else self._deadline - time.monotonic()

    def headers(self) -> Headers:
        return tuple(self._headers.items())  # read only when tracing is on

    def span_attributes(self) -> SpanAttributes:
        return _SPAN

    def status_attributes(self, status: Status) -> SpanAttributes:
        return _STATUS_ATTRIBUTES[status]

    def wants_binary(self) -> bool:
        """Whether the request asks for any output as binary tensor data."""
        return self._request.wants_binary()

    def decode(self, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> list[np.ndarray]:
        arrays = codec.decode_inputs(self._request, inputs, self._limits)
        self._wanted = codec.requested_outputs(self._request, outputs)
        return arrays

    def encode(self, result: InferResult) -> tuple[bytes, int | None]:
        """The response body and the length of its JSON header when binary data follows it."""
        self.run_ns = result.run_ns
        chosen = [(choice, result.output(choice.name)) for choice in self._wanted]
        return codec.encode_response(
            model_name=result.graph,
            model_version=result.version,
            request_id=result.request_id,
            outputs=[(choice, array) for choice, array in chosen if array is not None],
            parameters=result.lineage if self._lineage else None,
        )
