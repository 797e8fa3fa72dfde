"""Prometheus metrics, built at scrape time from the counters the engine already keeps.

The request path never calls prometheus_client: the executor and the protocol
edge add to plain integer counters (``engine.execution.stats``), and
``EngineCollector`` turns a snapshot of them into metric families when
``/metrics`` is scraped. Names and labels are documented in docs/metrics.md;
labels are bounded (graph, version, node, kind, status code), never request ids.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from engine.execution.stats import BATCH_SIZE_BUCKETS, LATENCY_BUCKETS_S, GraphStats, Histogram
from engine.interfaces import FEATURE_STATUS_NAMES
from engine.monitoring.drift import DriftRow
from engine.monitoring.quality import OUTCOMES, Quality
from engine.shadow.report import LATENCY_BOUNDS_S, ShadowReport

_LE = [*(f"{b:g}" for b in LATENCY_BUCKETS_S), "+Inf"]
_BATCH_LE = [*(str(b) for b in BATCH_SIZE_BUCKETS), "+Inf"]


@dataclass(frozen=True, slots=True)
class RolloutRow:
    """One graph's rollout as this process sees it (``engine.serving.rollout``), for a scrape."""

    graph: str
    candidate: str
    state: str  # running | paused | promoted | rolled_back
    step: int  # 1-based
    weight: float  # the candidate's share of requests now
    requests: Mapping[str, int]  # arm (serving | candidate) -> requests in the step
    errors: Mapping[str, int]
    p99_s: Mapping[str, float | None]


ROLLOUT_STATES = ("running", "paused", "promoted", "rolled_back")


@dataclass
class EngineSnapshot:
    """Everything one scrape reads; assembled by the server from its parts."""

    graphs: list[GraphStats] = field(default_factory=list)
    ready: list[tuple[str, str, bool]] = field(default_factory=list)  # graph, version, ready
    load_failures: Mapping[str, int] = field(default_factory=dict)
    unrouted: Mapping[str, int] = field(default_factory=dict)  # code -> requests that named no served graph
    calls: Mapping[tuple[str, str], int] = field(default_factory=dict)  # (protocol, code) -> inference calls
    in_flight: int = 0
    pool_queue_depth: int = 0
    pool_runs_terminated: int = 0
    request_log: Mapping[str, int] = field(default_factory=dict)  # written/dropped/failed/pending/truncated
    shed: Mapping[str, int] = field(default_factory=dict)  # admission rejections by reason
    admission_queue_depth: int = 0
    shadows: ShadowReport | None = None  # every shadow's numbers so far (engine.shadow)
    shadow_pool: Mapping[str, int] = field(default_factory=dict)  # in_flight / queued
    drift: list[DriftRow] = field(default_factory=list)  # this process's drift per column and window
    quality: list[Quality] = field(default_factory=list)  # this process's live quality per version
    shadow_shed: Mapping[str, int] = field(default_factory=dict)  # shed shadow runs by reason
    loop_lag_s: float = 0.0  # how late the event loop last ran a timer (decayed)
    rollouts: list[RolloutRow] = field(default_factory=list)  # this process's rollouts
    extra: list[Metric] = field(default_factory=list)  # families other parts contribute


def _buckets(histogram: Histogram) -> list[tuple[str, float]]:
    return _cumulative(histogram.counts, _LE)


def _cumulative(counts: list[int], bounds: list[str]) -> list[tuple[str, float]]:
    running, out = 0, []
    for le, count in zip(bounds, counts, strict=True):
        running += count
        out.append((le, float(running)))
    return out


class EngineCollector(Collector):
    def __init__(self, snapshot: Callable[[], EngineSnapshot]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        snap = self._snapshot()
        requests = CounterMetricFamily(
            "engine_requests",
            "ModelInfer requests answered, by graph, version and gRPC status code",
            labels=["graph", "version", "code"],
        )
        durations = HistogramMetricFamily(
            "engine_request_duration_seconds",
            "Server-side ModelInfer latency (decode, run, encode)",
            labels=["graph", "version", "code"],
        )
        node_durations = HistogramMetricFamily(
            "engine_node_duration_seconds",
            "Time one node took for one request",
            labels=["graph", "version", "node", "kind"],
        )
        node_errors = CounterMetricFamily(
            "engine_node_errors", "Node executions that failed", labels=["graph", "version", "node", "kind"]
        )
        node_queue = CounterMetricFamily(
            "engine_node_queue_seconds",
            "Time node runs spent waiting for a thread-pool thread (part of engine_node_duration_seconds)",
            labels=["graph", "version", "node", "kind"],
        )
        batch_sizes = HistogramMetricFamily(
            "engine_node_batch_size",
            "Rows in each batch a batching model node ran (requests' rows run together)",
            labels=["graph", "version", "node", "kind"],
        )
        rows = CounterMetricFamily("engine_rows", "Rows (batch elements) served", labels=["graph", "version"])
        feature_values = CounterMetricFamily(
            "engine_feature_values",
            "Values fetched by features nodes, by where each came from: present (the store), cached, "
            "or a default because it was missing, stale, timed_out or failed",
            labels=["graph", "version", "node", "status"],
        )
        violations = CounterMetricFamily(
            "engine_contract_violations",
            "Rows that broke a data contract rule (range, allow_nan, values) of a graph input or a "
            "feature field, by action: reject (the request failed) or flag (served and recorded)",
            labels=["graph", "version", "tensor", "column", "rule", "action"],
        )
        for stats in snap.graphs:
            for key, count in sorted(stats.violations.items()):
                violations.add_metric([stats.name, stats.version, *key.split("|", 3)], count)
            for code, histogram in sorted(stats.by_code.items()):
                labels = [stats.name, stats.version, code]
                requests.add_metric(labels, histogram.count)
                durations.add_metric(labels, _buckets(histogram), histogram.sum_ns / 1e9)
            rows.add_metric([stats.name, stats.version], stats.inference_count)
            for node in stats.nodes.values():
                labels = [stats.name, stats.version, node.name, node.kind]
                node_durations.add_metric(labels, _buckets(node.latency), node.latency.sum_ns / 1e9)
                node_errors.add_metric(labels, node.fail.count)
                node_queue.add_metric(labels, node.queue.ns / 1e9)
                if node.kind == "features":
                    for status, count in zip(FEATURE_STATUS_NAMES, node.feature_values, strict=True):
                        feature_values.add_metric([stats.name, stats.version, node.name, status], count)
                if node.batch_sizes is not None:
                    batch_sizes.add_metric(labels, _cumulative(node.batch_sizes, _BATCH_LE), node.batch_rows)
        for code, count in sorted(snap.unrouted.items()):
            requests.add_metric(["", "", code], count)
        yield from (requests, durations, node_durations, node_errors, node_queue, batch_sizes, rows)
        yield feature_values
        yield violations
        calls = CounterMetricFamily(
            "engine_protocol_requests",
            "Inference calls by front door (grpc, grpc-stream, http) and status code",
            labels=["protocol", "code"],
        )
        for (protocol, code), count in sorted(snap.calls.items()):
            calls.add_metric([protocol, code], count)
        yield calls

        ready = GaugeMetricFamily(
            "engine_graph_ready", "1 if the graph version serves", labels=["graph", "version"]
        )
        for graph, version, is_ready in snap.ready:
            ready.add_metric([graph, version], 1.0 if is_ready else 0.0)
        yield ready
        failures = CounterMetricFamily(
            "engine_graph_load_failures", "Graph versions rejected at (re)load", labels=["graph"]
        )
        for graph, count in sorted(snap.load_failures.items()):
            failures.add_metric([graph], count)
        yield failures
        yield GaugeMetricFamily(
            "engine_in_flight_requests", "ModelInfer calls being served", value=snap.in_flight
        )
        yield GaugeMetricFamily(
            "engine_thread_pool_queue_depth",
            "Model runs waiting for a thread-pool thread",
            value=snap.pool_queue_depth,
        )
        yield CounterMetricFamily(
            "engine_thread_pool_runs_terminated",
            "Model runs stopped part-way because their caller gave up (node or shadow timeout, "
            "request deadline, drain): the thread came free at the model's next node",
            value=snap.pool_runs_terminated,
        )
        shed = CounterMetricFamily(
            "engine_admission_rejected",
            "Inference calls shed with RESOURCE_EXHAUSTED: queue_full (no room to wait), "
            "queue_wait (waited too long)",
            labels=["reason"],
        )
        for reason, count in sorted(snap.shed.items()):
            shed.add_metric([reason], count)
        yield shed
        yield GaugeMetricFamily(
            "engine_admission_queue_depth",
            "Inference calls waiting for a slot",
            value=snap.admission_queue_depth,
        )
        # Exported with or without a sink (zeros without), so alerts and load tests read one name.
        records = CounterMetricFamily(
            "engine_request_log_records",
            "Request-log records by outcome: written to the sink, dropped (queue full or not "
            "flushed at shutdown), failed (the sink refused them); all 0 without a sink",
            labels=["outcome"],
        )
        for outcome in ("written", "dropped", "failed"):
            records.add_metric([outcome], snap.request_log.get(outcome, 0))
        yield records
        yield CounterMetricFamily(
            "engine_request_log_truncated_records",
            "Request-log records whose largest tensors were summarised to fit max_record_bytes (each "
            "also counted in engine_request_log_records_total); 0 without a sink",
            value=snap.request_log.get("truncated", 0),
        )
        yield GaugeMetricFamily(
            "engine_request_log_queue_depth",
            "Records waiting to be written",
            value=snap.request_log.get("pending", 0),
        )
        yield GaugeMetricFamily(
            "engine_event_loop_lag_seconds",
            "How late the event loop last ran a 5 ms timer (decayed by half each tick): queueing no "
            "counter sees; shadows are shed while live calls queue",
            value=snap.loop_lag_s,
        )
        yield _shadow_shed(snap.shadow_shed)
        if snap.shadows is not None:
            yield from _shadow_families(snap.shadows, snap.shadow_pool)
        if snap.drift:
            yield from _drift_families(snap.drift)
        if snap.quality:
            yield from _quality_families(snap.quality)
        if snap.rollouts:
            yield from _rollout_families(snap.rollouts)
        yield from snap.extra


STOP_POLL_S = 0.02
"""How often the serving thread looks for a stop request: ``stop`` (on the event loop) waits at most
this long. prometheus_client's ``start_http_server`` polls every 0.5 s, which held every shutdown
(and the event loop) up to half a second per metrics endpoint."""


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _IPv6Server(_ThreadingWSGIServer):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not logged."""


def serve_registry(host: str, port: int, registry: CollectorRegistry) -> tuple[WSGIServer, threading.Thread]:
    """``registry`` as ``/metrics`` over HTTP on a daemon thread that stops promptly."""
    server_class: type[_ThreadingWSGIServer] = _IPv6Server if ":" in host else _ThreadingWSGIServer
    httpd: WSGIServer = make_server(
        host, port, make_wsgi_app(registry), server_class, handler_class=_QuietHandler
    )
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": STOP_POLL_S}, name="metrics", daemon=True
    )
    thread.start()
    return httpd, thread


class MetricsServer:
    """``/metrics`` over HTTP on its own thread, from a private registry."""

    def __init__(self, snapshot: Callable[[], EngineSnapshot], *, process: bool = True) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(EngineCollector(snapshot))
        if process:
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
        self._httpd: WSGIServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    def start(self, host: str, port: int) -> int:
        httpd, thread = serve_registry(host, port, self.registry)
        self._httpd, self._thread = httpd, thread
        self.port = httpd.server_address[1]
        return self.port

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None


def _shadow_shed(shed: Mapping[str, int]) -> Metric:
    family = CounterMetricFamily(
        "engine_shadow_shed",
        "Shadow runs shed, by reason: queue_full (pool and queue full), live_pressure (live calls were "
        "queueing), back_off (a failing candidate runs on a probe share only), draining (shutdown)",
        labels=["reason"],
    )
    for reason, count in sorted(shed.items()):
        family.add_metric([reason], count)
    return family


def _shadow_families(report: ShadowReport, pool: Mapping[str, int]) -> Iterator[Metric]:
    """Shadow outcomes, compared rows and agreement, and the shadow pool's occupancy."""
    outcomes = CounterMetricFamily(
        "engine_shadow_requests",
        "Requests that reached a shadow, by outcome: run (compared), skipped (not sampled), shed "
        "(pool full or live under pressure), errors, timeouts, cancelled (shutdown), no_live (live failed)",
        labels=["graph", "shadow", "target", "outcome"],
    )
    rows = CounterMetricFamily(
        "engine_shadow_rows", "Rows compared per shadow output", labels=["graph", "shadow", "output"]
    )
    agree = CounterMetricFamily(
        "engine_shadow_rows_agree",
        "Rows whose shadow value agrees with live under the output's compare rule",
        labels=["graph", "shadow", "output"],
    )
    latency = HistogramMetricFamily(
        "engine_shadow_latency_seconds",
        "Duration of the live target and of its shadow per compared request (buckets within 0.5%)",
        labels=["graph", "shadow", "side"],
    )
    for graph, shadows in sorted(report.graphs.items()):
        for shadow, summary in sorted(shadows.items()):
            target = summary.target or "(graph)"
            for outcome, count in asdict(summary.counters).items():
                if outcome != "sampled":
                    outcomes.add_metric([graph, shadow, target, outcome], count)
            for output, stats in sorted(summary.outputs.items()):
                rows.add_metric([graph, shadow, output], stats.rows)
                agree.add_metric([graph, shadow, output], stats.agree)
            for side, buckets in (
                ("live", summary.latency.live_buckets),
                ("shadow", summary.latency.shadow_buckets),
            ):
                if buckets.count:
                    le = [(f"{b:g}", float(n)) for b, n in zip(LATENCY_BOUNDS_S, buckets.le, strict=True)]
                    latency.add_metric(
                        [graph, shadow, side], [*le, ("+Inf", float(buckets.count))], sum_value=buckets.sum_s
                    )
    yield from (outcomes, rows, agree, latency)
    for name, value in sorted(pool.items()):
        yield GaugeMetricFamily(
            f"engine_shadow_pool_{name}", f"Shadow runs {name.replace('_', ' ')}", value=value
        )


_DRIFT_GAUGES = (
    ("psi", "Population stability index of the column's live values against its reference profile"),
    ("js_distance", "Jensen-Shannon distance (base 2) of the column's live values from its reference"),
    ("nan_share", "Share of the column's live values that are NaN (or empty text)"),
    ("out_of_range_share", "Share of the column's live values outside the reference's [min, max] or values"),
)


def _drift_families(rows: list[DriftRow]) -> Iterator[Metric]:
    """Drift per graph version, column and window (windows without live values are left out)."""
    labels = ["graph", "version", "column", "window"]
    families = {
        name: GaugeMetricFamily(f"engine_drift_{name}", text, labels=labels) for name, text in _DRIFT_GAUGES
    }
    counted = GaugeMetricFamily(
        "engine_drift_rows", "Live values of the column counted in the window", labels=labels
    )
    for row in rows:
        key = [row.graph, row.version, row.column, row.window]
        counted.add_metric(key, row.rows)
        for name, family in families.items():
            value = getattr(row, name)
            if value is not None:
                family.add_metric(key, value)
    yield from families.values()
    yield counted


def _quality_families(qualities: list[Quality]) -> Iterator[Metric]:
    """Live quality per graph version from labelled predictions, and the labels by outcome."""
    labels = CounterMetricFamily(
        "engine_feedback_labels",
        "Labels received (Feedback), by outcome: matched, duplicate, late (the prediction had left the "
        "window), unknown (no such request id), invalid",
        labels=["graph", "version", "outcome"],
    )
    pairs = GaugeMetricFamily(
        "engine_quality_labelled",
        "Predictions with a label (the pairs quality is computed on)",
        labels=["graph", "version"],
    )
    values = GaugeMetricFamily(
        "engine_quality",
        "Live quality over labelled predictions: auc, log_loss, accuracy, precision, recall, "
        "calibration_error (binary, at the graph's threshold); mae, rmse (regression)",
        labels=["graph", "version", "metric"],
    )
    shadows = GaugeMetricFamily(
        "engine_quality_shadow",
        "Live quality of a shadow candidate (side=candidate) and of its live target on the same "
        "labelled rows (side=live)",
        labels=["graph", "version", "shadow", "side", "metric"],
    )
    arms = GaugeMetricFamily(
        "engine_quality_arm",
        "Live quality of the predictions a split arm served (arm: SPLIT=BRANCH)",
        labels=["graph", "version", "arm", "metric"],
    )
    for q in qualities:
        for arm, (_, arm_metrics) in q.arms.items():
            for metric, value in arm_metrics.items():
                if value is not None:
                    arms.add_metric([q.graph, q.version, arm, metric], value)
        for name, shadow in q.shadows.items():
            for side, numbers in (("candidate", shadow.candidate), ("live", shadow.live)):
                for metric, value in numbers.items():
                    if value is not None:
                        shadows.add_metric([q.graph, q.version, name, side, metric], value)
        for outcome in OUTCOMES:
            labels.add_metric([q.graph, q.version, outcome], q.counts.get(outcome, 0))
        pairs.add_metric([q.graph, q.version], q.pairs)
        for name, value in q.metrics.items():
            if value is not None:
                values.add_metric([q.graph, q.version, name], value)
    yield from (labels, pairs, values, shadows, arms)


def _rollout_families(rows: list[RolloutRow]) -> Iterator[Metric]:
    """Each rollout's step, weight, state and its arms' numbers over the current step (this process)."""
    labels = ["graph", "candidate"]
    step = GaugeMetricFamily("engine_rollout_step", "Current step of the rollout (1-based)", labels=labels)
    weight = GaugeMetricFamily(
        "engine_rollout_weight", "Share of requests the candidate serves now", labels=labels
    )
    state = GaugeMetricFamily("engine_rollout_state", "1 for the rollout's state", labels=[*labels, "state"])
    arm = [*labels, "arm"]
    requests = GaugeMetricFamily(
        "engine_rollout_requests", "Requests of each arm in the current step", labels=arm
    )
    errors = GaugeMetricFamily(
        "engine_rollout_errors", "Failed requests of each arm in the current step", labels=arm
    )
    p99 = GaugeMetricFamily(
        "engine_rollout_latency_p99_seconds", "p99 latency of each arm in the current step", labels=arm
    )
    gate = GaugeMetricFamily(
        "engine_rollout_gate_value",
        "What the gates compare, from this process's numbers: error_rate_increase (candidate - "
        "serving) and p99_ratio (candidate / serving)",
        labels=[*labels, "gate"],
    )
    for row in rows:
        key = [row.graph, row.candidate]
        step.add_metric(key, row.step)
        weight.add_metric(key, row.weight)
        for name in ROLLOUT_STATES:
            state.add_metric([*key, name], 1.0 if name == row.state else 0.0)
        for side in ("serving", "candidate"):
            requests.add_metric([*key, side], row.requests.get(side, 0))
            errors.add_metric([*key, side], row.errors.get(side, 0))
            if (value := row.p99_s.get(side)) is not None:
                p99.add_metric([*key, side], value)
        rates = {
            side: row.errors.get(side, 0) / n
            for side in ("serving", "candidate")
            if (n := row.requests.get(side, 0))
        }
        if len(rates) == 2:
            gate.add_metric([*key, "error_rate_increase"], rates["candidate"] - rates["serving"])
        mine, theirs = row.p99_s.get("candidate"), row.p99_s.get("serving")
        if mine is not None and theirs:
            gate.add_metric([*key, "p99_ratio"], mine / theirs)
    yield from (step, weight, state, requests, errors, p99, gate)
