"""The Prometheus exposition built from the executor's counters, parsed back as Prometheus would."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from engine.execution.stats import GraphStats, Histogram
from engine.observability.metrics import EngineSnapshot, MetricsServer


def test_histogram_buckets_are_upper_bounds() -> None:
    h = Histogram()
    for ns in (10_000, 50_000, 50_001, 2_000_000_000, 99_000_000_000):
        h.observe(ns)
    assert h.count == 5
    assert h.counts[0] == 2  # 10 µs and exactly 50 µs are <= 50 µs
    assert h.counts[1] == 1  # 50.001 µs is in the <= 100 µs bucket
    assert h.counts[-1] == 1  # 99 s is beyond the last bound


def _snapshot() -> EngineSnapshot:
    stats = GraphStats("fraud", "1")
    for _ in range(3):
        stats.record_request(ok=True, code="OK", total_ns=400_000, rows=2)
    stats.record_request(ok=False, code="INVALID_ARGUMENT", total_ns=30_000)
    node = stats.node("ip_risk", "model")
    node.record(True, 20_000, 2)
    node.record(False, 5_000, 0)
    return EngineSnapshot(
        graphs=[stats],
        ready=[("fraud", "1", True)],
        load_failures={"broken": 2},
        unrouted={"NOT_FOUND": 4},
        in_flight=1,
        pool_queue_depth=0,
    )


def test_scrape_over_http_parses_and_counts_match() -> None:
    server = MetricsServer(_snapshot, process=False)
    port = server.start("127.0.0.1", 0)
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    finally:
        server.stop()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    ok = (("code", "OK"), ("graph", "fraud"), ("version", "1"))
    assert samples[("engine_requests_total", ok)] == 3
    assert samples[("engine_requests_total", (("code", "NOT_FOUND"), ("graph", ""), ("version", "")))] == 4
    assert samples[("engine_request_duration_seconds_count", ok)] == 3
    assert abs(samples[("engine_request_duration_seconds_sum", ok)] - 0.0012) < 1e-9
    assert (
        samples[
            (
                "engine_request_duration_seconds_bucket",
                (*ok[:1], ("graph", "fraud"), ("le", "0.00025"), ("version", "1")),
            )
        ]
        == 0
    )
    assert (
        samples[
            (
                "engine_request_duration_seconds_bucket",
                (*ok[:1], ("graph", "fraud"), ("le", "0.0005"), ("version", "1")),
            )
        ]
        == 3
    )
    node = (("graph", "fraud"), ("kind", "model"), ("node", "ip_risk"), ("version", "1"))
    assert samples[("engine_node_errors_total", node)] == 1
    assert samples[("engine_node_duration_seconds_count", node)] == 2
    assert samples[("engine_rows_total", (("graph", "fraud"), ("version", "1")))] == 6
    assert samples[("engine_graph_ready", (("graph", "fraud"), ("version", "1")))] == 1
    assert samples[("engine_graph_load_failures_total", (("graph", "broken"),))] == 2
    assert samples[("engine_in_flight_requests", ())] == 1
