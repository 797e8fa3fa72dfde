"""Every SLA in loadtest/examples/ runs against the served example graphs, its server assertions
reading metric names the engine exports.

The files' own rates and durations are minutes of load; here each runs for a second at a low
rate, and its latency and rate bounds (client or server side) are left out (a shared test
machine is no place for timed assertions: those belong to `make bench`); every metric the file
names must still be exported. Everything else is the file's own.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from loadtest.cli import main
from tests.server_thread import ServerThread

from .conftest import write_sla

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "loadtest" / "examples").glob("*.yaml"))


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_every_example_runs_against_the_served_examples(
    example: Path, tmp_path: Path, fraud_server: ServerThread
) -> None:
    assert fraud_server.server is not None
    metrics = f"http://127.0.0.1:{fraud_server.server.metrics_port}/metrics"
    sla = yaml.safe_load(example.read_text())
    sla["target"]["url"] = fraud_server.url
    for kind, where in sla.get("source", {}).items():  # a file source is relative to the example's folder
        if isinstance(where, str) and kind in ("jsonl", "csv", "parquet", "log"):
            sla["source"][kind] = str((example.parent / where).resolve())
    if "metrics" in sla["target"]:
        sla["target"]["metrics"] = metrics
    sla["load"] = {
        **sla["load"],
        "warmup": "0.2s",
        "stages": [{"rate": 20, "duration": "1s"}],
        "max_lag": "500ms",
    }
    for timed in ("latency", "min_rate"):
        sla["assertions"].pop(timed, None)
    names = [check["metric"] for check in sla["assertions"].get("server", [])]  # every name is checked below
    if "server" in sla["assertions"]:  # a server-side latency bound is a timed assertion too
        sla["assertions"]["server"] = [c for c in sla["assertions"]["server"] if "quantile" not in c]
    path = write_sla(tmp_path / example.name, sla)
    code = main(["run", str(path), "--out", str(tmp_path / "out"), "--quiet", "--no-plots"])
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert code == 0, report["checks"]
    assert report["summary"]["outcomes"].get("OK", 0) > 0
    families = list(
        text_string_to_metric_families(urllib.request.urlopen(metrics, timeout=5).read().decode())
    )
    # a histogram's quantile is read from its family; a counter or gauge by its sample's name
    exported = {f.name for f in families if f.type == "histogram"} | {
        s.name for f in families for s in f.samples
    }
    for name in names:
        assert name in exported, f"{example.name} reads {name}, which the engine does not export"
