"""A tiny ONNX model whose run time grows with the batch (deadline tests; depth 4 for the held graph)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

WIDTH = 256
ROWS = 2048
"""A request of ROWS rows of ones takes a good fraction of a second; the one-row warm-up does not."""


def slow_model(path: Path, depth: int = 512, scale: float = 1.0) -> Path:
    """x FP32 [N, WIDTH] -> y FP32 [N, 1]: ``depth`` MatMuls, a row mean, times ``scale``.

    Each MatMul is by a matrix whose every entry is 1/WIDTH, so a row of ones stays a row of
    ones and y = ``scale`` for x = ones.
    """
    names = ["x"] + [f"h{i}" for i in range(depth)]
    nodes = [helper.make_node("MatMul", [names[i], "W"], [names[i + 1]]) for i in range(depth)]
    nodes.append(helper.make_node("ReduceMean", [names[-1]], ["m"], axes=[1], keepdims=1))
    nodes.append(helper.make_node("Mul", ["m", "S"], ["y"]))
    weight = np.full((WIDTH, WIDTH), 1.0 / WIDTH, dtype=np.float32)
    graph = helper.make_graph(
        nodes,
        "slow",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", WIDTH])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])],
        [numpy_helper.from_array(weight, "W"), numpy_helper.from_array(np.float32([scale]), "S")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def slow_graph(folder: Path, *, version: int = 1, scale: float = 1.0) -> Path:
    """A graph folder ``slow`` serving the slow model (always in the thread pool)."""
    folder.mkdir(parents=True, exist_ok=True)
    slow_model(folder / "slow.onnx", scale=scale)
    (folder / "graph.yaml").write_text(
        f"""\
graph: {folder.name}
version: {version}
inputs:
  x: {{datatype: FP32, shape: [-1, {WIDTH}]}}
nodes:
  crunch:
    model: slow.onnx
    inputs: {{x: inputs.x}}
    execution: pool
outputs:
  y: crunch.y
"""
    )
    return folder
