"""Explain keeps the graph's redactions: a redacted input and what is computed from it stay hidden
unless an admin asks for them explicitly."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from engine.protocol.client import EngineClient, decode_outputs
from engine.protocol.generated.inference import grpc_service_pb2 as pb
from tests.server_thread import ServerThread

SECRET = np.array([[5.1, 3.5, 1.4, 0.2]], np.float32)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, example_graphs: Path) -> Iterator[ServerThread]:
    root = tmp_path_factory.mktemp("graphs")
    folder = root / "secret"
    shutil.copytree(example_graphs / "quickstart", folder)
    (folder / "graph.yaml").write_text(
        """\
graph: secret
version: 1
inputs:
  x: {datatype: FP32, shape: [-1, 4]}
nodes:
  doubled:
    transform: expr
    expr: "inputs.x * 2"
  embed:
    model: scaler.onnx
    inputs: {x: doubled}
  classify:
    model: classifier.onnx
    inputs: {x: embed.z}
outputs:
  prob: classify.prob
logging:
  redact: [inputs.x]
"""
    )
    with ServerThread(root) as running:
        yield running


def _explain(server: ServerThread, show_redacted: bool) -> tuple[list[np.ndarray], list[str]]:
    client = EngineClient(server.url)
    try:
        request = pb.ModelInferRequest(model_name="secret")
        request.inputs.add(name="x", datatype="FP32", shape=[1, 4])
        request.raw_input_contents.append(SECRET.tobytes())
        explained = client.explain(request, show_redacted=show_redacted)
    finally:
        client.close()
    shown = []
    for node in explained.nodes:
        for tensor in (*node.inputs, *node.outputs):
            shown.extend(decode_outputs(pb.ModelInferResponse(outputs=[tensor])).values())
    return shown, [name for node in explained.nodes for name in node.redacted]


def _reveals(shown: list[np.ndarray]) -> bool:
    return any(
        a.shape == SECRET.shape and (np.allclose(a, SECRET) or np.allclose(a, SECRET * 2)) for a in shown
    )


def test_explain_withholds_redacted_inputs_and_what_is_derived_from_them(server: ServerThread) -> None:
    shown, redacted = _explain(server, show_redacted=False)
    assert not _reveals(shown), "a redacted input (or its double) is in the explain trace"
    assert "inputs.x" in redacted and any(name.startswith("doubled.") for name in redacted), redacted
    assert shown  # the model scores are still shown


def test_an_admin_may_ask_to_see_them(server: ServerThread) -> None:
    shown, redacted = _explain(server, show_redacted=True)
    assert _reveals(shown) and not redacted
