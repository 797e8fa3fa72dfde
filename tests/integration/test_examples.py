"""Every example graph through a real server, called as users do (tritonclient.grpc).

Expected values are computed by hand: the same ONNX files run directly in
onnxruntime, the graph's transforms written out in numpy and the fraud graph's feature lookup read from
graphs/fraud/users.csv (tests/fraud_example.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as triton

from tests import fraud_example as fraud
from tests.server_thread import ServerThread


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    session = _session(path)
    return session.run(None, {"x": x})[0]


def _input(name: str, array: np.ndarray, datatype: str = "FP32") -> triton.InferInput:
    tensor = triton.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


def _fraud_inputs(amount: np.ndarray, user_id: np.ndarray, txn: np.ndarray) -> list[triton.InferInput]:
    return [_input("amount", amount), _input("user_id", user_id, "BYTES"), _input("txn", txn)]


def test_server_is_live_ready_and_lists_both_graphs(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("fraud") and client.is_model_ready("quickstart")
    index = client.get_model_repository_index(as_json=True)["models"]
    assert {(m["name"], m["state"]) for m in index} >= {("fraud", "READY"), ("quickstart", "READY")}
    meta = client.get_server_metadata(as_json=True)
    assert "statistics" in meta["extensions"] and "model_configuration" in meta["extensions"]


@pytest.mark.parametrize("rows", [1, 7, 256])
def test_quickstart_matches_the_models_run_by_hand(
    client: triton.InferenceServerClient, example_graphs: Path, rows: int
) -> None:
    x = np.random.default_rng(rows).normal(scale=2.0, size=(rows, 4)).astype(np.float32)
    result = client.infer("quickstart", [_input("x", x)])
    z = _run(example_graphs / "quickstart" / "scaler.onnx", x)
    prob = _run(example_graphs / "quickstart" / "classifier.onnx", np.clip(z, -3, 3).astype(np.float32))
    np.testing.assert_allclose(result.as_numpy("z"), z, rtol=1e-6)
    np.testing.assert_allclose(result.as_numpy("prob"), prob, rtol=1e-6)
    assert result.as_numpy("prob").shape == (rows, 1)


@pytest.mark.parametrize("rows", [1, 2, 64, 500])
def test_fraud_matches_the_models_run_by_hand(
    client: triton.InferenceServerClient, example_graphs: Path, rows: int
) -> None:
    amount, user_id, txn = fraud.batch(rows, seed=rows)
    result = client.infer("fraud", _fraud_inputs(amount, user_id, txn))
    score, decision = fraud.by_hand(amount, user_id, txn, example_graphs / "fraud")
    np.testing.assert_allclose(result.as_numpy("score"), score, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(result.as_numpy("decision"), decision)
    assert result.as_numpy("decision").dtype == np.bool_


def test_a_rows_result_does_not_depend_on_its_batch_mates(client: triton.InferenceServerClient) -> None:
    # onnxruntime's GEMM kernels differ by batch size in the last bit, so scores are compared to
    # within float32 rounding; rows that mixed with their batch-mates would differ far more.
    amount, user_id, txn = fraud.batch(40, seed=11)
    together = client.infer("fraud", _fraud_inputs(amount, user_id, txn))
    for i in range(0, 40, 3):
        alone = client.infer("fraud", _fraud_inputs(amount[i : i + 1], user_id[i : i + 1], txn[i : i + 1]))
        np.testing.assert_allclose(
            alone.as_numpy("score")[0], together.as_numpy("score")[i], rtol=1e-5, atol=1e-7
        )
        np.testing.assert_array_equal(alone.as_numpy("decision")[0], together.as_numpy("decision")[i])


def test_requesting_one_output_returns_only_that_output(client: triton.InferenceServerClient) -> None:
    result = client.infer(
        "fraud",
        _fraud_inputs(*fraud.batch(3)),
        outputs=[triton.InferRequestedOutput("decision")],
    )
    assert result.as_numpy("decision").shape == (3, 1)
    assert result.as_numpy("score") is None


def test_request_id_is_echoed(client: triton.InferenceServerClient) -> None:
    x = np.zeros((1, 4), np.float32)
    result = client.infer("quickstart", [_input("x", x)], request_id="req-42")
    assert result.get_response().id == "req-42"


def test_model_metadata_declares_inputs_and_inferred_outputs(client: triton.InferenceServerClient) -> None:
    meta = client.get_model_metadata("fraud", as_json=True)
    assert meta["platform"] == "ensemble" and meta["versions"] == ["1"]
    assert [(t["name"], t["datatype"], t["shape"]) for t in meta["inputs"]] == [
        ("amount", "FP32", ["-1", "1"]),
        ("user_id", "BYTES", ["-1", "1"]),
        ("txn", "FP32", ["-1", "3"]),
    ]
    assert [(t["name"], t["datatype"], t["shape"]) for t in meta["outputs"]] == [
        ("score", "FP32", ["-1", "1"]),
        ("decision", "BOOL", ["-1", "1"]),
    ]


def test_model_config_is_an_ensemble_of_the_graph_nodes(client: triton.InferenceServerClient) -> None:
    config = client.get_model_config("fraud", as_json=True)["config"]
    assert config["platform"] == "ensemble"
    assert int(config["max_batch_size"]) > 0
    # With max_batch_size > 0, Triton's dims leave out the batch dimension.
    assert [(i["name"], i["data_type"], i["dims"]) for i in config["input"]] == [
        ("amount", "TYPE_FP32", ["1"]),
        ("user_id", "TYPE_STRING", ["1"]),
        ("txn", "TYPE_FP32", ["3"]),
    ]
    steps = [s["model_name"] for s in config["ensemble_scheduling"]["step"]]
    assert set(steps) >= {"fraud.ip_risk", "fraud.risk_route", "fraud.score", "fraud.decision"}
    assert len(config["parameters"]["ip_risk.sha256"]["string_value"]) == 64
    # Each step answers as a composing model, as perf_analyzer asks.
    step = client.get_model_config("fraud.ip_risk", as_json=True)["config"]
    assert step["name"] == "fraud.ip_risk" and step["backend"] == "onnxruntime"


def test_statistics_count_the_requests_sent(example_graphs: Path) -> None:
    with ServerThread(example_graphs) as server:
        client = triton.InferenceServerClient(server.url)
        x = np.ones((5, 4), np.float32)
        for _ in range(6):
            client.infer("quickstart", [_input("x", x)])
        with pytest.raises(triton.InferenceServerException):
            client.infer("quickstart", [_input("x", np.ones((5, 3), np.float32))])
        stats = client.get_inference_statistics("quickstart", as_json=True)["model_stats"][0]
        assert stats["name"] == "quickstart"
        assert int(stats["execution_count"]) == 6 and int(stats["inference_count"]) == 30
        assert int(stats["inference_stats"]["success"]["count"]) == 6
        assert int(stats["inference_stats"]["fail"]["count"]) == 1
        assert int(stats["inference_stats"]["compute_infer"]["ns"]) > 0
        node = client.get_inference_statistics("quickstart.embed", as_json=True)["model_stats"][0]
        assert int(node["inference_stats"]["success"]["count"]) == 6 and int(node["inference_count"]) == 30
        everything = client.get_inference_statistics("", as_json=True)["model_stats"]
        assert {"quickstart", "quickstart.embed", "quickstart.classify"} <= {s["name"] for s in everything}
        client.close()


async def test_the_asyncio_client_works_too(server: ServerThread) -> None:
    import tritonclient.grpc.aio as triton_aio

    client = triton_aio.InferenceServerClient(server.url)
    try:
        x = np.zeros((2, 4), np.float32)
        tensor = triton_aio.InferInput("x", [2, 4], "FP32")
        tensor.set_data_from_numpy(x)
        result = await client.infer("quickstart", [tensor])
        assert result.as_numpy("prob").shape == (2, 1)
    finally:
        await client.close()
