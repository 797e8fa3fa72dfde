"""Label feedback against a real server: predictions served through tritonclient with request ids,
labels sent with `engine feedback load`; the live AUC is scikit-learn's on the same pairs."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from sklearn.metrics import accuracy_score, log_loss, precision_score, recall_score, roc_auc_score

from engine.protocol.generated.engine.v1 import engine_pb2 as epb
from tests import fraud_example as fraud
from tests.server_thread import ServerThread

ENGINE = str(Path(sys.executable).with_name("engine"))
N = 1000


def _training() -> list[dict[str, str]]:
    with (fraud.GRAPHS / "fraud" / "train.csv").open(newline="") as file:
        return list(csv.DictReader(file))


def _one(row: dict[str, str]) -> list[triton.InferInput]:
    tensors = []
    for name, array, datatype in (
        ("amount", np.array([[float(row["amount"])]], np.float32), "FP32"),
        ("user_id", np.array([[row["user_id"].encode()]], dtype=object), "BYTES"),
        (
            "txn",
            np.array(
                [[float(row[f"txn.{c}"]) for c in ("ip_risk_score", "foreign_card", "hour")]], np.float32
            ),
            "FP32",
        ),
    ):
        tensor = triton.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    return tensors


@pytest.fixture(scope="module")
def server(example_graphs: Path) -> Iterator[ServerThread]:
    # No admission limit (so no loop-lag shedding of shadows) and room for every shadow run.
    settings = {"max_concurrency": 0, "shadow_queue": 2000}
    with ServerThread(example_graphs, feature_sources=fraud.feature_sources(), **settings) as running:
        yield running


def test_labels_for_1000_requests_give_scikit_learns_auc(server: ServerThread, tmp_path: Path) -> None:
    rows = _training()[:N]
    client = triton.InferenceServerClient(server.url)
    scores = []
    for k, row in enumerate(rows):
        result = client.infer("fraud", _one(row), request_id=f"q-{k}")
        scores.append(float(result.as_numpy("score")[0, 0]))
    client.close()
    labels = [int(r["is_fraud"]) for r in rows]
    assert 0 < sum(labels) < N  # both classes
    n_high = sum(1 for r in rows if float(r["amount"]) > 1000)

    def shadows_done() -> bool:
        counters = server.server.dispatcher.comparisons.report().graphs["fraud"]["deep_v2"].counters
        return counters.run + counters.shed + counters.errors + counters.timeouts >= n_high

    deadline = time.monotonic() + 30
    while not shadows_done() and time.monotonic() < deadline:  # shadows settle off the response path
        time.sleep(0.05)
    file = tmp_path / "labels.csv"
    lines = ["request_id,is_fraud"] + [f"q-{k},{y}" for k, y in enumerate(labels)]
    lines += ["q-0,1", "nobody-served-this,0", "q-1,0.5"]  # a duplicate, an unknown id, an invalid label
    file.write_text("\n".join(lines) + "\n")
    run = subprocess.run(
        [ENGINE, "feedback", "load", str(file), "--graph", "fraud", "--id", "request_id",
         "--label", "is_fraud", "--url", server.url],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert f"{N} matched, 1 duplicate, 0 late, 1 unknown, 1 invalid" in run.stdout, run.stdout

    report = json.loads(
        subprocess.run(
            [ENGINE, "monitor", "report", "fraud", "--url", server.url, "--format", "json"],
            capture_output=True, text=True, check=True,
        ).stdout
    )  # fmt: skip
    quality = report["quality"][0]
    assert quality["pairs"] == N and quality["labels"]["matched"] == N
    assert quality["labels"] == {"matched": N, "duplicate": 1, "late": 0, "unknown": 1, "invalid": 1}
    y, p = np.array(labels), np.array(scores)
    assert abs(quality["auc"] - roc_auc_score(y, p)) < 1e-6
    assert abs(quality["log_loss"] - log_loss(y, p)) < 1e-6
    predicted = (p >= 0.5).astype(int)
    assert abs(quality["accuracy"] - accuracy_score(y, predicted)) < 1e-9
    if predicted.any():
        assert abs(quality["precision"] - precision_score(y, predicted)) < 1e-9
    assert abs(quality["recall"] - recall_score(y, predicted)) < 1e-9
    assert 0 <= quality["calibration_error"] <= 1
    # The shadow candidate deep_v2 ran on the rows routed to deep (amount > 1000): its quality and
    # deep's own on those labelled rows, against the models run by hand in onnxruntime.
    shadow = quality["shadows"]["deep_v2"]
    amount = np.array([[float(r["amount"])] for r in rows], np.float32)
    high = amount[:, 0] > 1000
    assert shadow["target"] == "deep" and 0 < shadow["pairs"] <= n_high == int(high.sum())
    # Which rows ran depends on the shadow's 50 ms timeout on a busy machine: match each labelled
    # pair to its row by the candidate's value, then check the numbers against scikit-learn.
    txn = np.array([[float(r[f"txn.{c}"]) for c in ("ip_risk_score", "foreign_card", "hour")] for r in rows])
    users = fraud.user_features(fraud.user_ids(*[r["user_id"] for r in rows]))
    x = fraud.build_models().fraud_x(amount, np.concatenate([users, txn], axis=1))
    by_hand = fraud._run(fraud.GRAPHS / "fraud" / "deep_v2.onnx", x)[:, 0]
    deep = fraud._run(fraud.GRAPHS / "fraud" / "deep.onnx", x)[:, 0]
    pairs = server.server.repository.get("fraud", "").quality.shadow_pairs["deep_v2"]
    assert len(pairs) == shadow["pairs"]
    matched_rows = []
    for candidate, live, label in pairs:
        row = int(np.argmin(np.abs(by_hand - candidate) + np.where(high, 0.0, 1e9)))
        assert abs(by_hand[row] - candidate) < 1e-6 and abs(deep[row] - live) < 1e-6 and y[row] == label
        matched_rows.append(row)
    ran = np.array(matched_rows)
    assert abs(shadow["candidate"]["auc"] - roc_auc_score(y[ran], by_hand[ran])) < 1e-6
    assert abs(shadow["live"]["auc"] - roc_auc_score(y[ran], deep[ran])) < 1e-6
    # ... and in the shadow report, beside the agreement numbers
    shadow_report = subprocess.run(
        [ENGINE, "shadow", "report", "fraud", "--url", server.url, "--format", "json"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    (entry,) = json.loads(shadow_report)["quality"]
    assert entry["shadow"] == "deep_v2" and entry["candidate"]["auc"] == shadow["candidate"]["auc"]
    table = subprocess.run(
        [ENGINE, "shadow", "report", "fraud", "--url", server.url], capture_output=True, text=True, check=True
    ).stdout
    assert "live quality from labels" in table and f"fraud v1 deep_v2 ({shadow['pairs']} rows)" in table
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{server.server.metrics_port}/metrics").read().decode()
    assert (
        'engine_quality_shadow{graph="fraud",metric="auc",shadow="deep_v2",side="candidate",version="1"}'
        in metrics
    )
    assert f'engine_feedback_labels_total{{graph="fraud",outcome="matched",version="1"}} {N}.0' in metrics
    assert 'engine_quality{graph="fraud",metric="auc",version="1"}' in metrics


def test_a_second_label_for_the_same_request_is_a_duplicate(server: ServerThread) -> None:
    client = triton.InferenceServerClient(server.url)
    client.infer("fraud", _one(_training()[0]), request_id="twice")
    client.close()
    with grpc.insecure_channel(server.url) as channel:
        call = channel.unary_unary(
            "/engine.v1.Engine/Feedback",
            request_serializer=epb.FeedbackRequest.SerializeToString,
            response_deserializer=epb.FeedbackResponse.FromString,
        )
        label = epb.Label(request_id="twice", value=1.0)
        first = call(epb.FeedbackRequest(graph="fraud", labels=[label]), timeout=10)
        second = call(epb.FeedbackRequest(graph="fraud", labels=[label]), timeout=10)
        assert (first.matched, second.matched, second.duplicate) == (1, 0, 1)
        with pytest.raises(grpc.RpcError) as missing:
            call(epb.FeedbackRequest(graph="nope", labels=[label]), timeout=10)
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.RpcError) as no_quality:
            call(epb.FeedbackRequest(graph="quickstart", labels=[label]), timeout=10)
        assert no_quality.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "quality:" in (no_quality.value.details() or "")


def test_labels_and_the_report_over_http(server: ServerThread) -> None:
    import httpx

    client = triton.InferenceServerClient(server.url)
    for i, row in enumerate(_training()[:5]):
        client.infer("fraud", _one(row), request_id=f"http-{i}")
    client.close()
    base = f"http://{server.http_url}/v2/engine"
    labels = [{"request_id": f"http-{i}", "value": i % 2} for i in range(5)] + [{"request_id": "never"}]
    refused = httpx.post(f"{base}/feedback", json={"graph": "fraud", "labels": labels})
    assert refused.status_code == 400 and "labels[5].value" in refused.json()["error"]
    labels[-1]["value"] = 1
    answer = httpx.post(f"{base}/feedback", json={"graph": "fraud", "labels": labels})
    assert answer.status_code == 200
    assert answer.json() == {"matched": 5, "duplicate": 0, "late": 0, "unknown": 1, "invalid": 0}
    assert httpx.post(f"{base}/feedback", json={"graph": "nope", "labels": []}).status_code == 404
    report = httpx.get(f"{base}/monitor", params={"graph": "fraud"})
    assert report.status_code == 200 and "fraud" in json.dumps(report.json())
    table = httpx.get(f"{base}/monitor", params={"graph": "fraud", "format": "table"})
    assert "quality of 'score'" in table.text


SPLIT = """\
inputs:
  x: {datatype: FP32, shape: [-1, 1]}
  user: {datatype: BYTES, shape: [-1, 1]}
nodes:
  same: {transform: expr, expr: "inputs.x"}
  flipped: {transform: expr, expr: "1 - inputs.x"}
  ab:
    split:
      - {to: same, weight: 50}
      - {to: flipped, weight: 50}
    key: inputs.user
outputs:
  score: ab
quality: {output: score, threshold: 0.5}
"""


def test_quality_per_split_arm(tmp_path: Path) -> None:
    (tmp_path / "ab").mkdir()
    (tmp_path / "ab" / "graph.yaml").write_text(SPLIT)
    rng = np.random.default_rng(5)
    x = rng.random(300).astype(np.float32)
    y = (rng.random(300) < x).astype(int)  # x predicts y; 1 - x predicts it backwards
    scores = []
    with ServerThread(tmp_path) as running:
        client = triton.InferenceServerClient(running.url)
        for k in range(300):
            xs, users = triton.InferInput("x", [2, 1], "FP32"), triton.InferInput("user", [2, 1], "BYTES")
            xs.set_data_from_numpy(np.array([[x[k]], [x[k]]], np.float32))  # two rows: one label each
            users.set_data_from_numpy(np.array([[f"u{k}".encode()], [f"v{k}".encode()]], dtype=object))
            scores.append(client.infer("ab", [xs, users], request_id=f"ab-{k}").as_numpy("score")[:, 0])
        client.close()
        labels = [(f"ab-{k}", row, float(y[k])) for k in range(300) for row in (0, 1)]
        counts = running.call(running.server.admin.feedback("ab", labels))
        assert counts["matched"] == 600
        report = json.loads(running.call(running.server.admin.monitor_report("ab")).json)
    arms = report["quality"][0]["arms"]
    assert set(arms) == {"ab=same", "ab=flipped"}
    served = np.array(scores)  # [300, 2]
    flipped = np.abs(served - x[:, None]) > 1e-6  # rows the flipped arm served
    for arm, mask in (("ab=same", ~flipped), ("ab=flipped", flipped)):
        rows_y = np.repeat(y[:, None], 2, axis=1)[mask]
        assert arms[arm]["pairs"] == int(mask.sum())
        assert abs(arms[arm]["auc"] - roc_auc_score(rows_y, served[mask])) < 1e-6
    assert arms["ab=same"]["auc"] > 0.6 > arms["ab=flipped"]["auc"]


def test_labels_join_offline_to_a_request_log(example_graphs: Path, tmp_path: Path) -> None:
    """Predictions older than the server's window: `engine feedback load --from LOGS` joins labels to
    the scores the request log recorded."""
    rows = _training()[:200]
    logs = tmp_path / "logs"
    settings = {"request_log": {"sink": "jsonl", "directory": str(logs)}}
    scores = []
    with ServerThread(example_graphs, feature_sources=fraud.feature_sources(), **settings) as running:
        client = triton.InferenceServerClient(running.url)
        for k, row in enumerate(rows):
            scores.append(
                float(client.infer("fraud", _one(row), request_id=f"old-{k}").as_numpy("score")[0, 0])
            )
        client.close()
    labels = [int(r["is_fraud"]) for r in rows]
    file = tmp_path / "labels.csv"
    file.write_text("id,y\n" + "\n".join(f"old-{k},{y}" for k, y in enumerate(labels)) + "\nnever-served,1\n")
    run = subprocess.run(
        [ENGINE, "feedback", "load", str(file), "--graph", "fraud", "--id", "id", "--label", "y",
         "--from", str(logs), "--format", "json"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    first, rest = run.stdout.split("\n", 1)
    assert first == f"201 labels joined to {logs}: 200 matched, 0 duplicate, 0 late, 1 unknown, 0 invalid"
    (quality,) = json.loads(rest)
    assert quality["pairs"] == 200 and quality["version"] == "1"
    assert abs(quality["auc"] - roc_auc_score(labels, scores)) < 1e-6
