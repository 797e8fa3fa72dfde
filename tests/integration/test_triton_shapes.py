"""Triton-shaped answers, as tritonclient reads them: ensemble steps named by the nodes' real
inputs and outputs, every ``<graph>.<node>`` answering ModelConfig and ModelMetadata with its
inputs, and ServerMetadata advertising only what is implemented."""

from __future__ import annotations

import pytest
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException


def test_ensemble_steps_map_the_nodes_real_input_and_output_names(
    client: triton.InferenceServerClient,
) -> None:
    config = client.get_model_config("fraud", as_json=True)["config"]
    steps = {s["model_name"]: s for s in config["ensemble_scheduling"]["step"]}
    assert steps["fraud.deep"]["input_map"] == {"x": "x.output"}  # deep.onnx's own input is called x
    assert steps["fraud.deep"]["output_map"] == {"prob": "deep.prob"}
    assert steps["fraud.score"]["input_map"] == {
        "ip_risk.prob": "ip_risk.prob",
        "risk_route.prob": "risk_route.prob",
    }
    assert not any(k.startswith("input") and k[5:].isdigit() for s in steps.values() for k in s["input_map"])


def test_each_node_answers_config_and_metadata_with_its_inputs(client: triton.InferenceServerClient) -> None:
    config = client.get_model_config("fraud.deep", as_json=True)["config"]
    assert [(i["name"], i["data_type"], i["dims"]) for i in config["input"]] == [
        ("x", "TYPE_FP32", ["-1", "7"])
    ]
    assert [o["name"] for o in config["output"]] == ["prob"]
    meta = client.get_model_metadata("fraud.deep", as_json=True)
    assert meta["name"] == "fraud.deep" and meta["platform"] == "onnxruntime_onnx"
    assert [(t["name"], t["datatype"], t["shape"]) for t in meta["inputs"]] == [("x", "FP32", ["-1", "7"])]
    assert [(t["name"], t["datatype"]) for t in meta["outputs"]] == [("prob", "FP32")]
    combine = client.get_model_metadata("fraud.score", as_json=True)
    assert [t["name"] for t in combine["inputs"]] == ["ip_risk.prob", "risk_route.prob"]
    with pytest.raises(InferenceServerException, match=r"NOT_FOUND|not found"):
        client.get_model_metadata("fraud.nosuch")


def test_server_metadata_advertises_only_implemented_extensions(client: triton.InferenceServerClient) -> None:
    extensions = set(client.get_server_metadata(as_json=True)["extensions"])
    assert extensions == {"model_configuration", "model_repository", "statistics"}
