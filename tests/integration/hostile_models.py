"""Small ONNX models that misbehave on purpose, and graph folders serving them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _save(  # type: ignore[no-untyped-def]
    path: Path, nodes: list[onnx.NodeProto], inputs, outputs, inits=(), opset: int = 17
) -> Path:
    graph = helper.make_graph(nodes, path.stem, inputs, outputs, list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def allocating_model(path: Path) -> Path:
    """s INT64 [2] -> y FP32 [A, B]: ``ConstantOfShape`` allocates the shape the request sends."""
    fill = numpy_helper.from_array(np.float32([1.0]))
    return _save(
        path,
        [helper.make_node("ConstantOfShape", ["s"], ["y"], value=fill)],
        [helper.make_tensor_value_info("s", TensorProto.INT64, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["A", "B"])],
    )


def first_row_model(path: Path) -> Path:
    """x FP32 [N, 1] -> y FP32 [N, 1] as declared, but it returns only the first row."""
    return _save(
        path,
        [helper.make_node("Slice", ["x", "start", "end"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])],
        [numpy_helper.from_array(np.int64([0]), "start"), numpy_helper.from_array(np.int64([1]), "end")],
    )


def future_opset_model(path: Path) -> Path:
    """x FP32 [N, 1] -> y: Identity, stamped with an operator set no onnxruntime knows."""
    return _save(
        path,
        [helper.make_node("Identity", ["x"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])],
        opset=99,
    )


def one_model_graph(folder: Path, model: str, inputs: str, output: str, node: str = "m") -> Path:
    """A graph folder whose one node ``node`` runs ``model`` (already written in the folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    name = inputs.split(":")[0]
    (folder / "graph.yaml").write_text(
        f"graph: {folder.name}\nversion: 1\ninputs:\n  {inputs}\n"
        f"nodes:\n  {node}:\n    model: {model}\n    inputs: {{{name}: inputs.{name}}}\n"
        f"outputs:\n  {output}: {node}.{output}\n"
    )
    return folder


def heavy_model(path: Path, megabytes: int) -> Path:
    """x FP32 [N, 1] -> y = x + sum(W): a model file of about ``megabytes`` MB of weights."""
    weights = numpy_helper.from_array(np.full((megabytes, 262_144), 1e-9, np.float32), "W")
    return _save(
        path,
        [
            helper.make_node("ReduceSum", ["W"], ["s"], keepdims=0),
            helper.make_node("Add", ["x", "s"], ["y"]),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])],
        [weights],
        opset=13,
    )


def weights_model(path: Path, megabytes: int) -> Path:
    """x INT64 [N] -> y FP32 [N, 1024]: rows of a ``megabytes`` MB table W (Gather). Unlike
    ``heavy_model`` nothing folds away at load: the session holds all of W while it is loaded."""
    rows = megabytes * 256  # a row of 1024 floats is 4 KiB
    table = numpy_helper.from_array(np.full((rows, 1024), 1e-3, np.float32), "W")
    return _save(
        path,
        [helper.make_node("Gather", ["W", "x"], ["y"], axis=0)],
        [helper.make_tensor_value_info("x", TensorProto.INT64, ["N"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1024])],
        [table],
        opset=13,
    )
