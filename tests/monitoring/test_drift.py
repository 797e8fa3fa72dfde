"""Online drift against a real server: the fraud example with a profile built from its training
data by `engine profile build`, fed unshifted and shifted traffic through tritonclient."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as triton
import yaml

from tests import fraud_example as fraud
from tests.integration.test_lifecycle import EngineProcess, free_port
from tests.server_thread import ServerThread

ENGINE = str(Path(sys.executable).with_name("engine"))
ROWS = 50


def _training() -> dict[str, np.ndarray]:
    with (fraud.GRAPHS / "fraud" / "train.csv").open(newline="") as file:
        rows = list(csv.DictReader(file))
    return {k: np.array([r[k] for r in rows]) for k in rows[0]}


def _request(
    data: dict[str, np.ndarray], rows: np.ndarray, hour: np.ndarray | None = None
) -> list[triton.InferInput]:
    txn = np.stack(
        [
            data["txn.ip_risk_score"][rows],
            data["txn.foreign_card"][rows],
            data["txn.hour"][rows] if hour is None else hour,
        ],
        axis=1,
    ).astype(np.float32)
    tensors = []
    for name, array, datatype in (
        ("amount", data["amount"][rows].astype(np.float32).reshape(-1, 1), "FP32"),
        (
            "user_id",
            np.array([u.encode() for u in data["user_id"][rows]], dtype=object).reshape(-1, 1),
            "BYTES",
        ),
        ("txn", txn, "FP32"),
    ):
        tensor = triton.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    return tensors


@pytest.fixture(scope="module")
def graphs(tmp_path_factory: pytest.TempPathFactory, example_graphs: Path) -> Path:
    root = tmp_path_factory.mktemp("graphs")
    shutil.copytree(example_graphs / "fraud", root / "fraud", ignore=shutil.ignore_patterns("profile.json"))
    (root / "engine.yaml").write_text(yaml.safe_dump({"feature_sources": fraud.feature_sources()}))
    run = subprocess.run(
        [ENGINE, "profile", "build", str(root / "fraud"), "--data", str(root / "fraud" / "train.csv")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert "txn.hour" in run.stdout and "user_id" in run.stdout and "skipped" in run.stdout
    return root


@pytest.fixture(scope="module")
def server(graphs: Path) -> Iterator[ServerThread]:
    with ServerThread(graphs, feature_sources=fraud.feature_sources()) as running:
        yield running


def test_the_profile_holds_the_reference_of_each_column(graphs: Path) -> None:
    profile = json.loads((graphs / "fraud" / "profile.json").read_text())
    columns = {c["name"]: c for c in profile["columns"]}
    assert profile["schema"] == "engine.profile/1" and profile["rows"] == 3000
    assert {"amount", "txn.hour", "user.account_age_days", "ip_risk.prob", "outputs.score"} <= set(columns)
    hour = columns["txn.hour"]
    assert sum(hour["counts"]) == 3000 and hour["low"] == 0 and hour["high"] == 23
    assert "user_id" in profile["skipped"]  # an identifier, not a distribution


def test_a_shifted_column_drifts_and_an_unshifted_one_does_not(server: ServerThread) -> None:
    data = _training()
    rng = np.random.default_rng(3)
    client = triton.InferenceServerClient(server.url)
    for _ in range(40):  # 2,000 rows: the training distribution, except that every hour is late
        rows = rng.integers(0, len(data["amount"]), size=ROWS)
        client.infer("fraud", _request(data, rows, hour=rng.integers(20, 24, size=ROWS).astype(np.float32)))
    client.close()
    report = server.call(server.server.admin.drift("fraud"))
    by = {(r.column, r.window): r for r in report.rows}
    assert report.versions[0].requests == 40 and report.versions[0].dropped == 0
    assert by[("txn.hour", "5m")].rows == 40 * ROWS
    assert by[("txn.hour", "5m")].psi > 0.25, by[("txn.hour", "5m")]
    assert by[("amount", "5m")].psi < 0.1, by[("amount", "5m")]
    assert by[("txn.ip_risk_score", "1h")].psi < 0.1
    assert by[("txn.hour", "5m")].js_distance > by[("amount", "5m")].js_distance
    assert by[("amount", "5m")].nan_share == 0.0
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{server.server.metrics_port}/metrics").read().decode()
    psi = re.search(
        r'engine_drift_psi\{column="txn.hour",graph="fraud",version="1",window="5m"\} (\S+)', metrics
    )
    assert psi is not None and float(psi.group(1)) > 0.25, metrics[-2000:]


def test_monitor_report_prints_a_table_json_and_plots(server: ServerThread, tmp_path: Path) -> None:
    base = [ENGINE, "monitor", "report", "fraud", "--url", server.url]
    table = subprocess.run(base, capture_output=True, text=True, check=True).stdout
    assert re.search(r"txn\.hour\s+5m\s+\d+\s+\d+\.\d+", table), table
    as_json = json.loads(
        subprocess.run([*base, "--format", "json"], capture_output=True, text=True, check=True).stdout
    )
    assert {r["column"] for r in as_json["drift"]} >= {"amount", "txn.hour", "outputs.score"}
    subprocess.run([*base, "--plots", str(tmp_path / "plots")], capture_output=True, check=True)
    plots = sorted(p.name for p in (tmp_path / "plots").glob("*.png"))
    assert "fraud-1-txn.hour.png" in plots and len(plots) == len(as_json["drift"]) // 2


def test_drift_counts_and_labels_add_up_across_two_workers(graphs: Path, tmp_path: Path) -> None:
    port, metrics_port = free_port(), free_port()
    parent = EngineProcess(
        str(graphs), "--workers", "2", "--port", str(port), "--metrics-port", str(metrics_port)
    )
    try:
        parent.wait_for(re.compile(r"serving \d+ graph"), count=2)
        data = _training()
        sent = 0
        for k in range(24):  # a fresh connection each: the kernel spreads them over both workers
            client = triton.InferenceServerClient(f"127.0.0.1:{port}")
            client.infer("fraud", _request(data, np.arange(k * 10, k * 10 + 10)), request_id=f"w-{k}")
            client.close()
            sent += 10
        run = subprocess.run(
            [ENGINE, "monitor", "report", "fraud", "--url", f"127.0.0.1:{port}", "--format", "json"],
            capture_output=True,
            text=True,
            check=True,
        )
        report = json.loads(run.stdout)
        assert report["versions"][0]["requests"] == 24
        hour = next(r for r in report["drift"] if r["column"] == "txn.hour" and r["window"] == "1h")
        assert hour["rows"] == sent and sum(hour["live"]) == sent
        expected = np.bincount(
            np.searchsorted(_hour_edges(graphs), data["txn.hour"][:sent].astype(float), side="right"),
            minlength=len(hour["live"]),
        )
        assert hour["live"] == expected.tolist()
        # each worker counted its own share: /metrics shows both, and they add up to the report
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics").read().decode()
        labels = 'column="txn.hour",graph="fraud",version="1",window="1h",worker="(\\d)"'
        pattern = r"engine_drift_rows\{" + labels + r"\} (\S+)"
        per_worker = {w: float(v) for w, v in re.findall(pattern, metrics)}
        assert len(per_worker) == 2 and all(v > 0 for v in per_worker.values()), per_worker
        assert sum(per_worker.values()) == sent
        # labels reach the worker that served each prediction, whichever worker receives them
        labels = tmp_path / "labels.csv"
        lines = [f"w-{k},{r},{data['is_fraud'][k * 10 + r]}" for k in range(24) for r in range(10)]
        labels.write_text("id,row,label\n" + "\n".join(lines) + "\nw-0,0,1\n")
        run = subprocess.run(
            [ENGINE, "feedback", "load", str(labels), "--graph", "fraud", "--id", "id", "--label", "label",
             "--row", "row", "--url", f"127.0.0.1:{port}"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        assert f"{sent} matched, 1 duplicate, 0 late, 0 unknown, 0 invalid" in run.stdout, run.stdout
    finally:
        parent.stop()


def _hour_edges(graphs: Path) -> list[float]:
    profile = json.loads((graphs / "fraud" / "profile.json").read_text())
    return next(c["edges"] for c in profile["columns"] if c["name"] == "txn.hour")


def test_a_profile_built_from_the_request_log_covers_what_was_served(graphs: Path, tmp_path: Path) -> None:
    root = tmp_path / "graphs"
    shutil.copytree(graphs, root)
    (root / "fraud" / "profile.json").unlink()
    logs = tmp_path / "logs"
    settings = {"request_log": {"sink": "jsonl", "directory": str(logs)}}
    data = _training()
    with ServerThread(root, feature_sources=fraud.feature_sources(), **settings) as running:
        client = triton.InferenceServerClient(running.url)
        for k in range(20):  # 10 rows each: within the graph's logging max_tensor_elements (64)
            client.infer("fraud", _request(data, np.arange(k * 10, k * 10 + 10)))
        client.close()
    run = subprocess.run(
        [ENGINE, "profile", "build", str(root / "fraud"), "--from", str(logs), "--since", "1h"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert "20 records" in run.stdout, run.stdout
    profile = json.loads((root / "fraud" / "profile.json").read_text())
    columns = {c["name"]: c for c in profile["columns"]}
    assert {"amount", "txn.hour", "user.account_age_days", "ip_risk.prob", "outputs.score"} <= set(columns)
    assert sum(columns["txn.hour"]["counts"]) == 200 and columns["amount"]["rows"] == 200
    hours = data["txn.hour"][:200].astype(float)
    assert columns["txn.hour"]["low"] == hours.min() and columns["txn.hour"]["high"] == hours.max()
