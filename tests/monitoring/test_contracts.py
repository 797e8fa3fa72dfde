"""Data contracts on the fraud example, against a real server: reject names the row, flag is served,
counted in /metrics and the statistics, and written to the request record."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as triton

from tests import fraud_example as fraud
from tests.server_thread import ServerThread

ENGINE = str(Path(sys.executable).with_name("engine"))


def _inputs(
    amount: list[float], txn: list[list[float]], users: tuple[str, ...] = ()
) -> list[triton.InferInput]:
    n = len(amount)
    tensors = []
    for name, array, datatype in (
        ("amount", np.asarray(amount, np.float32).reshape(n, 1), "FP32"),
        ("user_id", fraud.user_ids(*(users or ("u0001",) * n)), "BYTES"),
        ("txn", np.asarray(txn, np.float32).reshape(n, 3), "FP32"),
    ):
        tensor = triton.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    return tensors


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs")


REJECTING = "contract: {range: [0, 1000000], allow_nan: false, on_violation: reject}"


@pytest.fixture(scope="module")
def graphs(tmp_path_factory: pytest.TempPathFactory, example_graphs: Path) -> Path:
    """The fraud example with its `amount` contract set to reject (the example flags)."""
    root = tmp_path_factory.mktemp("graphs")
    shutil.copytree(example_graphs / "fraud", root / "fraud")
    text = (root / "fraud" / "graph.yaml").read_text()
    flagging = "contract: {range: [0, 1000000], allow_nan: false, on_violation: flag}"
    assert flagging in text
    (root / "fraud" / "graph.yaml").write_text(text.replace(flagging, REJECTING))
    return root


@pytest.fixture(scope="module")
def server(graphs: Path, logs: Path) -> Iterator[ServerThread]:
    settings = {"request_log": {"sink": "jsonl", "directory": str(logs)}}
    with ServerThread(graphs, feature_sources=fraud.feature_sources(), **settings) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: ServerThread) -> Iterator[triton.InferenceServerClient]:
    c = triton.InferenceServerClient(server.url)
    yield c
    c.close()


def test_a_reject_contract_names_the_tensor_column_row_and_rule(client: triton.InferenceServerClient) -> None:
    with pytest.raises(triton.InferenceServerException) as info:
        client.infer("fraud", _inputs([10.0, 20.0, -5.0, -1.0], [[0.1, 0, 12]] * 4))
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
    message = info.value.message()
    assert "tensor 'amount'" in message and "row 2" in message and "'range'" in message, message
    assert "2 rows in all" in message and "-5" in message
    with pytest.raises(triton.InferenceServerException) as info:
        client.infer("fraud", _inputs([10.0, float("nan")], [[0.1, 0, 12]] * 2))
    assert "row 1" in info.value.message() and "allow_nan" in info.value.message()


def test_a_flag_contract_serves_counts_and_records(
    server: ServerThread, client: triton.InferenceServerClient, logs: Path
) -> None:
    txn = [[0.1, 0, 12], [0.2, 1, 30], [3.0, 0, 40]]  # row 1 and 2: hour > 23; row 2: ip_risk > 1
    result = client.infer("fraud", _inputs([10.0, 20.0, 30.0], txn), request_id="flagged-1")
    assert result.as_numpy("score").shape == (3, 1)  # served
    stats = {(s.name, s.version): s for s in server.call(server.server.admin.statistics("fraud"))}
    violations = stats[("fraud", "1")].violations
    assert violations["txn|txn.hour|range|flag"] == 2
    assert violations["txn|txn.ip_risk_score|range|flag"] == 1
    assert violations["amount|amount|range|reject"] >= 2  # the rejected request above, when run first
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{server.server.metrics_port}/metrics").read().decode()
    assert (
        'engine_contract_violations_total{action="flag",column="txn.hour",graph="fraud",rule="range",'
        'tensor="txn",version="1"} 2.0' in metrics
    )
    server.call(server.server.stop(1.0))
    records = [json.loads(line) for p in logs.rglob("*.jsonl") for line in p.read_text().splitlines()]
    flagged = next(r for r in records if r["id"] == "flagged-1")
    assert flagged["status"] == "OK"
    assert "txn.hour range row 1 (2 rows) flag" in flagged["violations"]


def test_a_feature_field_contract_checks_fetched_values(tmp_path: Path, example_graphs: Path) -> None:
    """u0001's account_age_days (from users.csv) is outside a tightened contract: flagged, served."""
    text = (example_graphs / "fraud" / "graph.yaml").read_text()
    text = text.replace(
        "contract: {range: [0, 36500], on_violation: flag}", "contract: {range: [0, 0.5], on_violation: flag}"
    )
    graphs = tmp_path / "graphs"
    (graphs / "fraud").mkdir(parents=True)
    for path in (example_graphs / "fraud").iterdir():
        if path.is_file():
            (graphs / "fraud" / path.name).write_bytes(path.read_bytes())
    (graphs / "fraud" / "graph.yaml").write_text(text)
    with ServerThread(graphs, feature_sources=fraud.feature_sources()) as running:
        c = triton.InferenceServerClient(running.url)
        c.infer("fraud", _inputs([10.0, 10.0], [[0.1, 0, 1]] * 2, ("u0108", "nobody")))
        c.close()
        stats = running.call(running.server.admin.statistics("fraud"))[0]
    # u0108 has account_age_days 2 (> 0.5); the unknown user gets the default 0 (in range)
    assert stats.violations == {"user.account_age_days|user.account_age_days|range|flag": 1}


def test_validate_reports_contract_mistakes_at_their_position(tmp_path: Path) -> None:
    text = """\
inputs:
  x:
    datatype: FP32
    shape: [-1, 2]
    contract:
      on_violation: maybe
      columns:
        a: {range: [3, 1]}
        b: {values: [1, 2], allow_nan: false}
  s:
    datatype: BYTES
    shape: [-1, 1]
    contract: {range: [0, 1]}
nodes:
  y: {transform: identity, inputs: inputs.x}
outputs:
  y: y
"""
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "graph.yaml").write_text(text)
    run = subprocess.run(
        [ENGINE, "validate", str(tmp_path / "g")], capture_output=True, text=True, check=False
    )
    assert run.returncode != 0
    found = [line.removeprefix(f"{tmp_path}/g/") for line in (run.stdout + run.stderr).splitlines()]
    assert "graph.yaml:6:21: error: 'on_violation' must be 'reject' or 'flag', got the text 'maybe'" in found
    assert "graph.yaml:8:20: error: 'range' [3, 1] is empty: LOW is above HIGH" in found
    assert any(d.startswith("graph.yaml:9:13: error: 'values' applies to integers") for d in found), found
    assert "graph.yaml:13:16: error: 'range' needs a numeric datatype; this tensor is BYTES" in found
