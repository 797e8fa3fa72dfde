"""One ``/metrics`` for several worker processes (``engine serve --workers N``).

Each worker serves its own metrics on a loopback port; the supervising parent
serves the public port and, per scrape, fetches every worker's text and
re-exposes each sample with a ``worker`` label. A worker that does not answer
(restarting) is left out of that scrape and counted in
``engine_metrics_worker_scrape_errors_total``.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from engine.observability.metrics import serve_registry

SCRAPE_TIMEOUT_S = 2.0


class WorkerMetrics(Collector):
    def __init__(self, ports: Sequence[int]) -> None:
        self.ports = list(ports)
        self.errors = [0] * len(self.ports)

    def collect(self) -> Iterator[Metric]:
        merged: dict[str, Metric] = {}
        for index, port in enumerate(self.ports):
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/metrics", timeout=SCRAPE_TIMEOUT_S
                ) as reply:
                    text = reply.read().decode()
            except OSError:
                self.errors[index] += 1
                continue
            for family in text_string_to_metric_families(text):
                target = merged.get(family.name)
                if target is None:
                    target = merged[family.name] = Metric(
                        family.name, family.documentation, family.type, family.unit
                    )
                for sample in family.samples:
                    labels = {**sample.labels, "worker": str(index)}
                    target.add_sample(sample.name, labels, sample.value, sample.timestamp, sample.exemplar)
        yield from merged.values()
        errors = CounterMetricFamily(
            "engine_metrics_worker_scrape_errors", "Worker /metrics fetches that failed", labels=["worker"]
        )
        for index, count in enumerate(self.errors):
            errors.add_metric([str(index)], count)
        yield errors


def serve_merged(host: str, port: int, worker_ports: Sequence[int]) -> int:
    """Start the merged endpoint on a daemon thread; returns the bound port."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(WorkerMetrics(worker_ports))
    httpd, _ = serve_registry(host, port, registry)
    return httpd.server_address[1]
