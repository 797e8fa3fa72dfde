"""The control-plane calls a run makes to the server under test (not the load itself).

ModelMetadata (to build and check requests), one preflight ModelInfer (so a
source that does not fit the graph is a configuration error, not a 100 % error
rate), and ModelStatistics before and after the measurement for the per-node
breakdown.
"""

from __future__ import annotations

from typing import TypeVar

import grpc
from google.protobuf.message import Message

from engine.protocol.generated.inference import grpc_service_pb2 as pb

SERVICE = "/inference.GRPCInferenceService/"
# codes that mean "your request or target is wrong", not "the server is slow or failing"
MISCONFIGURED = {"INVALID_ARGUMENT", "NOT_FOUND", "UNIMPLEMENTED", "UNAUTHENTICATED", "PERMISSION_DENIED"}

_Response = TypeVar("_Response", bound=Message)


class TargetError(Exception):
    """The target cannot be used as configured (unreachable, unknown graph, rejects our requests)."""


class TargetClient:
    """A blocking gRPC channel to the server under test, for the few calls made outside the load."""

    def __init__(self, url: str, timeout_s: float = 10.0) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self._channel = grpc.insecure_channel(
            url, options=[("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]
        )

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> TargetClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, request: Message, response_type: type[_Response]) -> _Response:
        stub: grpc.UnaryUnaryMultiCallable[Message, _Response] = self._channel.unary_unary(
            SERVICE + method,
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=response_type.FromString,
        )
        return stub(request, timeout=self.timeout_s)

    def wait_ready(self, timeout_s: float = 10.0) -> None:
        try:
            grpc.channel_ready_future(self._channel).result(timeout=timeout_s)
        except grpc.FutureTimeoutError:
            raise TargetError(
                f"cannot reach {self.url} within {timeout_s:g} s (is the server running?)"
            ) from None

    def metadata(self, graph: str, version: str) -> pb.ModelMetadataResponse:
        try:
            return self._call(
                "ModelMetadata",
                pb.ModelMetadataRequest(name=graph, version=version),
                pb.ModelMetadataResponse,
            )
        except grpc.RpcError as exc:
            what = f"graph '{graph}'" + (f" version {version}" if version else "")
            raise TargetError(
                f"ModelMetadata for {what} at {self.url}: {exc.code().name}: {exc.details()}"
            ) from None

    def preflight(self, payload: bytes) -> str | None:
        """Send one request; the error text when the server rejects it as malformed, else None."""
        stub: grpc.UnaryUnaryMultiCallable[bytes, bytes] = self._channel.unary_unary(SERVICE + "ModelInfer")
        try:
            stub(payload, timeout=self.timeout_s)
        except grpc.RpcError as exc:
            if exc.code().name in MISCONFIGURED:
                return f"{exc.code().name}: {exc.details()}"
        return None

    def statistics(self) -> dict[str, pb.ModelStatistics] | None:
        """Every ModelStatistics entry keyed by (name, version); None when the server has none."""
        try:
            response = self._call("ModelStatistics", pb.ModelStatisticsRequest(), pb.ModelStatisticsResponse)
        except grpc.RpcError:
            return None
        return {f"{s.name}\0{s.version}": s for s in response.model_stats}
