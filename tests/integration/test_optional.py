"""An optional node that fails leaves its output out of the response; the rest is served."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tritonclient.grpc as triton

from tests.integration.test_shadows import _broken, _row_sum
from tests.server_thread import ServerThread

GRAPH = """\
inputs:
  x: {datatype: FP32, shape: [-1, 4]}
nodes:
  total: {model: sum.onnx, inputs: {x: inputs.x}}
  lookup: {model: lookup.onnx, inputs: {x: inputs.x}, optional: true}
outputs:
  total: total.y
  lookup: lookup.y
"""


def test_the_optional_output_is_left_out_when_its_node_fails(tmp_path: Path) -> None:
    folder = tmp_path / "graphs" / "opt"
    folder.mkdir(parents=True)
    _row_sum(folder / "sum.onnx")
    _broken(folder / "lookup.onnx")  # fails when x[0, 0] >= 4
    (folder / "graph.yaml").write_text(GRAPH)
    with ServerThread(tmp_path / "graphs") as server:
        client = triton.InferenceServerClient(server.url)

        def call(first: float) -> triton.InferResult:
            x = np.array([[first, 1, 1, 1]], np.float32)
            tensor = triton.InferInput("x", [1, 4], "FP32")
            tensor.set_data_from_numpy(x)
            return client.infer("opt", [tensor])

        ok, failed = call(2.0), call(50.0)
    assert ok.as_numpy("total").tolist() == [[5.0]] and ok.as_numpy("lookup").tolist() == [[2.0]]
    assert failed.as_numpy("total").tolist() == [[53.0]]
    assert failed.as_numpy("lookup") is None  # absent, not an error
    assert [o["name"] for o in failed.get_response(as_json=True)["outputs"]] == ["total"]
