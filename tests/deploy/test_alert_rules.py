"""The shipped alert rules and dashboard: `promtool` checks and unit-tests the rules, a real
Prometheus scrapes a real `engine serve` and loads them, and every metric they name is one the
engine exports (read from that server's own /metrics)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as triton
import yaml

from tests import fraud_example as fraud
from tests.integration.test_lifecycle import EngineProcess, free_port

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "engine-alerts.yaml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "engine-alerts.test.yaml"
DASHBOARD = ROOT / "deploy" / "grafana" / "engine-dashboard.json"
OPERATOR_RULES = ROOT / "deploy" / "k8s" / "monitoring" / "prometheusrule.yaml"
ENGINE = str(Path(sys.executable).with_name("engine"))
PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (Debian: apt-get install prometheus)"
)
needs_prometheus = pytest.mark.skipif(
    PROMETHEUS is None, reason="prometheus not installed (Debian: apt-get install prometheus)"
)


def _names(text: str) -> set[str]:
    return {re.sub(r"_(bucket|count|sum)$", "", t) for t in re.findall(r"(?<![\w:])engine_[a-z_]+", text)}


def _dashboard_exprs() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in board["panels"] for t in p.get("targets", [])]


@needs_promtool
def test_promtool_checks_and_unit_tests_the_rules() -> None:
    assert PROMTOOL is not None
    check = subprocess.run(
        [PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr
    run = subprocess.run(
        [PROMTOOL, "test", "rules", RULE_TESTS.name],
        cwd=RULE_TESTS.parent,
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0 and "SUCCESS" in run.stdout, run.stdout + run.stderr
    tested = set(re.findall(r"alertname: (\w+)", RULE_TESTS.read_text()))
    data_alerts = {
        r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "alert" in r
    }
    assert data_alerts - tested <= {"GraphEngineErrorBudgetSlowBurn", "GraphEngineLatencyBudgetSlowBurn"}


def test_the_operator_rule_carries_the_same_groups() -> None:
    plain = yaml.safe_load(RULES.read_text())["groups"]
    operator = yaml.safe_load(OPERATOR_RULES.read_text())["spec"]["groups"]
    for group in plain:
        assert group in operator, group["name"]


def test_every_dashboard_panel_queries_an_engine_metric() -> None:
    exprs = _dashboard_exprs()
    assert len(exprs) >= 15
    for expr in exprs:
        assert _names(expr), expr
        assert expr.count("(") == expr.count(")"), expr


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def _query(port: int, expr: str) -> list[dict[str, Any]]:
    data = _get(f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    assert data["status"] == "success", data
    return list(data["data"]["result"])


def _wait(check: Any, what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = check()
        except OSError:
            found = None
        if found:
            return found
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def _fraud_request(hours: np.ndarray) -> list[triton.InferInput]:
    n = len(hours)
    tensors = []
    for name, array, datatype in (
        ("amount", np.full((n, 1), 120.0, np.float32), "FP32"),
        ("user_id", fraud.user_ids(*["u0001"] * n), "BYTES"),
        ("txn", np.stack([np.full(n, 0.2), np.zeros(n), hours], axis=1).astype(np.float32), "FP32"),
    ):
        tensor = triton.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    return tensors


@needs_prometheus
def test_a_real_prometheus_scrapes_engine_serve_and_loads_the_rules(
    example_graphs: Path, tmp_path: Path
) -> None:
    assert PROMETHEUS is not None
    port, metrics_port, prom_port = free_port(), free_port(), free_port()
    engine = EngineProcess(
        str(example_graphs), "--port", str(port), "--metrics-port", str(metrics_port),
        "--request-log", str(tmp_path / "logs"), "--workers", "1",  # one: serving_port() waits for one
    )  # fmt: skip
    config = tmp_path / "prometheus.yml"
    shutil.copy(RULES, tmp_path / RULES.name)
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [RULES.name],
                "scrape_configs": [
                    {"job_name": "engine", "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}]}
                ],
            }
        )
    )
    prometheus = subprocess.Popen(
        [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{prom_port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        engine.serving_port()
        client = triton.InferenceServerClient(f"127.0.0.1:{port}")
        for k in range(20):  # late hours, some beyond the contract's 23 (flagged), with request ids
            client.infer("fraud", _fraud_request(np.array([20.0, 22.0, 30.0])), request_id=f"p-{k}")
        client.close()
        labels = tmp_path / "labels.csv"
        labels.write_text(
            "id,row,y\n" + "\n".join(f"p-{k},{r},{(k + r) % 2}" for k in range(20) for r in range(3)) + "\n"
        )
        subprocess.run(
            [ENGINE, "feedback", "load", str(labels), "--graph", "fraud",
             "--id", "id", "--row", "row", "--label", "y", "--url", f"127.0.0.1:{port}"],
            check=True, capture_output=True,
        )  # fmt: skip

        def scraped() -> list[dict[str, Any]]:
            return _query(prom_port, 'engine_drift_psi{graph="fraud",column="txn.hour",window="5m"}')

        psi = _wait(scraped, "Prometheus to scrape the drift gauge")
        assert float(psi[0]["value"][1]) > 0.25  # every hour is late: shifted
        assert _wait(lambda: _query(prom_port, 'engine_quality{graph="fraud",metric="auc"}'), "the live AUC")
        up = _query(prom_port, 'up{job="engine"}')
        assert up and up[0]["value"][1] == "1"
        rules = _get(f"http://127.0.0.1:{prom_port}/api/v1/rules")["data"]["groups"]
        loaded = [r for g in rules for r in g["rules"]]
        assert len(loaded) == 20 and all(r["health"] in ("ok", "unknown") for r in loaded), loaded
        _wait(
            lambda: all(
                r["health"] == "ok"
                for g in _get(f"http://127.0.0.1:{prom_port}/api/v1/rules")["data"]["groups"]
                for r in g["rules"]
            ),
            "every rule to evaluate cleanly",
        )
        # Every metric the rules and the dashboard name is one this server exports.
        exported = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics").read().decode()
        families = _names(" ".join(re.findall(r"^# TYPE (\S+)", exported, re.M)))
        families |= {f"{n}_total" for n in families}
        referenced = _names(RULES.read_text()) | _names(" ".join(_dashboard_exprs()))
        assert referenced <= families, referenced - families
    finally:
        prometheus.terminate()
        prometheus.wait(10)
        engine.stop()
