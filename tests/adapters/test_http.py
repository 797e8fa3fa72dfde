"""HttpSource against a small Feast-shaped feature server run by the test."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from adapters.http import HttpSource
from engine.errors import DependencyUnavailable
from engine.interfaces import FeatureField, FeatureStatus
from engine.tensors import DataType

STORE = {
    "1001": {
        "conv_rate": (0.5, "PRESENT", "2099-01-01T00:00:00Z"),
        "trips": (12, "PRESENT", "2099-01-01T00:00:00Z"),
    },
    "1002": {
        "conv_rate": (0.1, "OUTSIDE_MAX_AGE", "2001-01-01T00:00:00Z"),
        "trips": (None, "NULL_VALUE", None),
    },
    "1003": {"conv_rate": (0.7, "PRESENT", "2001-01-01T00:00:00Z"), "trips": ("lots", "PRESENT", None)},
}


class FeastHandler(BaseHTTPRequestHandler):
    requests: list[dict] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FeastHandler.requests.append(
            {
                "path": self.path,
                "body": body,
                "auth": self.headers.get("Authorization"),
                "traceparent": self.headers.get("traceparent"),
            }
        )
        if self.path != "/get-online-features":
            self.send_response(404)
            self.end_headers()
            return
        ids = [str(v) for v in body["entities"]["driver_id"]]
        names = ["driver_id"] + [ref.split(":", 1)[1] for ref in body["features"]]
        results = [
            {
                "values": body["entities"]["driver_id"],
                "statuses": ["PRESENT"] * len(ids),
                "event_timestamps": ["1970-01-01T00:00:00Z"] * len(ids),
            }
        ]
        for name in names[1:]:
            cells = [STORE.get(i, {}).get(name, (None, "NOT_FOUND", None)) for i in ids]
            results.append(
                {
                    "values": [c[0] for c in cells],
                    "statuses": [c[1] for c in cells],
                    "event_timestamps": [c[2] for c in cells],
                }
            )
        payload = json.dumps({"metadata": {"feature_names": names}, "results": results}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture
def feast_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FeastHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    FeastHandler.requests.clear()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


CONV = FeatureField("conv_rate", DataType.FP32, default=-1.0)
TRIPS = FeatureField("trips", DataType.INT64, default=0)


async def test_feast_request_and_status_mapping(feast_url: str) -> None:
    source = HttpSource(
        "drivers",
        feast_url,
        feature_view="driver_hourly_stats",
        entity_key="driver_id",
        key_type="int",
        headers={"Authorization": "Bearer t0k"},
    )
    try:
        batch = await source.fetch(["1001", "1002", "1003", "9999"], [CONV, TRIPS])
        aged = await source.fetch(["1001", "1003"], [CONV], max_age_s=3600)
    finally:
        await source.close()
    [request, _] = FeastHandler.requests
    assert request["body"] == {
        "features": ["driver_hourly_stats:conv_rate", "driver_hourly_stats:trips"],
        "entities": {"driver_id": [1001, 1002, 1003, 9999]},
    }
    assert request["auth"] == "Bearer t0k"
    assert batch.values["conv_rate"].tolist() == [0.5, -1.0, pytest.approx(0.7), -1.0]
    assert batch.values["trips"].tolist() == [12, 0, 0, 0]
    assert batch.status.tolist() == [
        [FeatureStatus.PRESENT, FeatureStatus.PRESENT],
        [FeatureStatus.STALE, FeatureStatus.MISSING],
        [FeatureStatus.PRESENT, FeatureStatus.FAILED],
        [FeatureStatus.MISSING, FeatureStatus.MISSING],
    ]
    assert aged.status[:, 0].tolist() == [FeatureStatus.PRESENT, FeatureStatus.STALE]


async def test_http_errors_are_unavailable(feast_url: str) -> None:
    wrong_path = HttpSource("drivers", feast_url + "/nope", feature_view="v")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    closed = HttpSource("drivers", f"http://127.0.0.1:{port}", feature_view="v")
    try:
        with pytest.raises(DependencyUnavailable, match="HTTP 404"):
            await wrong_path.fetch(["1"], [CONV])
        with pytest.raises(DependencyUnavailable, match="HTTP store unreachable") as info:
            await closed.fetch(["1"], [CONV])
        assert info.value.__cause__ is not None
        assert f":{port}" not in str(info.value) and "ConnectError" not in str(info.value)  # only logged
    finally:
        await wrong_path.close()
        await closed.close()


async def test_the_trace_context_of_the_request_reaches_the_feature_service(feast_url: str) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    provider = TracerProvider()
    source = HttpSource("drivers", feast_url, feature_view="driver_hourly_stats", entity_key="driver_id")
    try:
        await source.fetch(["1001"], [CONV])  # no current span: nothing is added
        with provider.get_tracer("test").start_as_current_span("request") as span:
            await source.fetch(["1001"], [CONV])
            context = span.get_span_context()
    finally:
        await source.close()
        provider.shutdown()
    untraced, traced = FeastHandler.requests
    assert untraced["traceparent"] is None
    flags = int(context.trace_flags)
    assert traced["traceparent"] == f"00-{context.trace_id:032x}-{context.span_id:016x}-{flags:02x}"
