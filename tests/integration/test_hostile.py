"""Hostile input against a live server: every case gets a well-defined answer and the server
keeps serving; an expired request releases everything it held."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton

from engine.protocol.client import EngineClient
from engine.protocol.generated.engine.v1 import engine_pb2 as epb
from engine.protocol.generated.inference import grpc_service_pb2 as pb
from tests.integration.slow_model import ROWS, WIDTH, slow_graph
from tests.server_thread import ServerThread

BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True)
)
HOSTILE_YAML = {
    "alias bomb": BOMB,
    "deep nesting": "graph: " + "[" * 200 + "]" * 200 + "\n",
    "python tag": "graph: !!python/object/apply:os.system ['touch /tmp/pwned']\n",
    "control character": "graph: a\x07\n",
    "duplicate keys": "graph: a\ngraph: b\n",
    "expression injection": (
        "inputs: {x: {datatype: FP32, shape: [-1, 1]}}\n"
        "nodes: {e: {transform: expr, expr: \"__import__('os').system('touch /tmp/pwned')\"}}\n"
        "outputs: {y: e}\n"
    ),
    "escaping model path": "inputs: {x: {datatype: FP32, shape: [-1, 4]}}\n"
    "nodes: {m: {model: ../../../etc/passwd, inputs: {x: inputs.x}}}\noutputs: {y: m.y}\n",
    "absolute model path": "inputs: {x: {datatype: FP32, shape: [-1, 4]}}\n"
    "nodes: {m: {model: /etc/passwd, inputs: {x: inputs.x}}}\noutputs: {y: m.y}\n",
    "huge declared shape": "inputs: {x: {datatype: FP32, shape: [-1, 99999999999999999999]}}\n"
    "nodes: {e: {transform: identity, inputs: inputs.x}}\noutputs: {y: e}\n",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, example_graphs: Path):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("graphs")
    shutil.copytree(example_graphs / "quickstart", root / "quickstart")
    shutil.copytree(example_graphs / "quickstart", root / "corrupt")
    (root / "corrupt" / "scaler.onnx").write_bytes(b"\x08\x07not an onnx model" * 50)
    slow_graph(root / "slow")
    with ServerThread(root, max_message_bytes=4_000_000) as running:
        yield running


def _quick(url: str) -> np.ndarray:
    client = triton.InferenceServerClient(url)
    tensor = triton.InferInput("x", [1, 4], "FP32")
    tensor.set_data_from_numpy(np.zeros((1, 4), np.float32))
    try:
        return client.infer("quickstart", [tensor]).as_numpy("prob")
    finally:
        client.close()


@pytest.mark.parametrize("case", list(HOSTILE_YAML))
def test_hostile_graph_text_gets_diagnostics_and_the_server_still_serves(
    server: ServerThread, case: str
) -> None:
    admin = EngineClient(server.url)
    response = admin.admin(
        "ValidateGraph",
        epb.ValidateGraphRequest(yaml=HOSTILE_YAML[case], filename="quickstart/graph.yaml"),
        epb.ValidateGraphResponse,
    )
    admin.close()
    assert not response.ok and response.diagnostics, case
    assert all(d.line >= 1 for d in response.diagnostics)
    assert not Path("/tmp/pwned").exists()
    assert _quick(server.url).shape == (1, 1)


def test_a_corrupt_onnx_file_fails_its_graph_only(server: ServerThread) -> None:
    client = triton.InferenceServerClient(server.url)
    assert not client.is_model_ready("corrupt")
    index = {m["name"]: m for m in client.get_model_repository_index(as_json=True)["models"]}
    assert index["corrupt"]["state"] == "FAILED" and "scaler.onnx" in index["corrupt"]["reason"]
    assert client.is_model_ready("quickstart")
    client.close()


def test_an_oversized_message_is_refused_and_the_server_still_serves(server: ServerThread) -> None:
    request = pb.ModelInferRequest(model_name="quickstart")
    request.inputs.add(name="x", datatype="FP32", shape=[300_000, 4])
    request.raw_input_contents.append(np.zeros((300_000, 4), np.float32).tobytes())  # 4.8 MB > 4 MB
    with grpc.insecure_channel(server.url) as channel:
        call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        with pytest.raises(grpc.RpcError) as info:
            call(request.SerializeToString(), timeout=10)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert _quick(server.url).shape == (1, 1)


def test_an_expired_request_releases_everything_it_held(server: ServerThread) -> None:
    state = server.server.state
    stats = server.server.repository.get("slow").stats
    before = stats.fail.count
    client = triton.InferenceServerClient(server.url)
    tensor = triton.InferInput("x", [ROWS, WIDTH], "FP32")
    tensor.set_data_from_numpy(np.ones((ROWS, WIDTH), np.float32))
    with pytest.raises(triton.InferenceServerException) as info:
        client.infer("slow", [tensor], client_timeout=0.1)
    assert info.value.status() == "StatusCode.DEADLINE_EXCEEDED"
    deadline = time.monotonic() + 10
    while (
        state.in_flight or state.admission.active or stats.fail.count == before
    ) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert state.in_flight == 0 and state.admission.active == 0 and state.admission.queued == 0
    assert stats.fail.count == before + 1  # counted as a failed request, not left hanging
    client.close()
    assert _quick(server.url).shape == (1, 1)
