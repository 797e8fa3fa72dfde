"""Mistakes a new user made, each reported once, in words that name what is wrong and where.

Checked with the real onnxruntime factory on the quickstart's models.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.graph import check_graph
from engine.runtimes.onnx import OnnxRuntimeFactory

HEAD = """\
inputs:
  x: {datatype: FP32, shape: [-1, 4]}
nodes:
  embed: {model: scaler.onnx, inputs: {x: inputs.x}}
  a: {model: classifier.onnx, inputs: {x: embed.z}}
"""


@pytest.fixture(scope="module")
def runtimes() -> Iterator[OnnxRuntimeFactory]:
    factory = OnnxRuntimeFactory(max_workers=1, warmup_runs=1)
    yield factory
    factory.close()


@pytest.fixture
def folder(tmp_path: Path, example_graphs: Path) -> Path:
    for model in ("scaler.onnx", "classifier.onnx"):
        shutil.copy(example_graphs / "quickstart" / model, tmp_path / model)
    return tmp_path


def _at(text: str, fragment: str) -> str:
    """``line:col`` of ``fragment``'s first character in ``text``."""
    before = text[: text.index(fragment)]
    return f"{before.count(chr(10)) + 1}:{len(before) - before.rfind(chr(10))}"


def _errors(folder: Path, runtimes: OnnxRuntimeFactory, text: str) -> list[str]:
    diagnostics = check_graph(text, filename="graph.yaml", graph_dir=folder, runtimes=runtimes)
    return [f"{d.line}:{d.col}: {d.message}" for d in diagnostics if d.severity == "error"]


def test_a_graph_input_no_node_reads_is_reported(folder: Path, runtimes: OnnxRuntimeFactory) -> None:
    text = HEAD.replace("inputs:\n", "inputs:\n  country: {datatype: BYTES, shape: [-1, 1]}\n", 1)
    text += "outputs:\n  prob: a.prob\n"
    assert _errors(folder, runtimes, text) == [
        f"{_at(text, 'country')}: graph input 'country' is not used by any node or output; remove it, "
        "or every request must send it for nothing"
    ]
    used_in_expression = text.replace(
        "outputs:", '  flag: {transform: expr, expr: "where(x > 0, 1, 0)"}\noutputs:\n  flag: flag'
    ).replace("  country: {datatype: BYTES, shape: [-1, 1]}\n", "")
    assert _errors(folder, runtimes, used_in_expression) == []  # a bare name in an expression reads it
    served_as_is = text + "  echo: inputs.country\n"
    assert _errors(folder, runtimes, served_as_is) == []  # an output may serve an input directly


def test_a_node_reading_a_broken_node_still_reports_its_own_mistakes(
    folder: Path, runtimes: OnnxRuntimeFactory
) -> None:
    text = HEAD + (
        "  b: {model: classifier.onnx, inputs: {x: embed.q}}\n"  # broken: embed has no q
        "  blend: {combine: weighted_mean, inputs: [a.prob, b.prob], weights: [1, 2, 3]}\n"
        "outputs:\n  p: blend\n"
    )
    assert _errors(folder, runtimes, text) == [
        f"{_at(text, 'embed.q')}: node 'embed' has no output 'q' (its outputs: z)",
        f"{_at(text, '[1, 2, 3]')}: node 'blend': combine 'weighted_mean': 'weights' has 3 numbers but the "
        "node has 2 inputs",
    ]


def test_a_model_that_cannot_load_says_so_once(folder: Path, runtimes: OnnxRuntimeFactory) -> None:
    (folder / "broken.onnx").write_bytes(b"not a model")
    text = HEAD.replace("classifier.onnx", "broken.onnx") + "outputs:\n  p: a\n"
    (error,) = _errors(folder, runtimes, text)
    assert error.startswith(f"{_at(text, 'broken.onnx')}: cannot load model 'broken.onnx': ")
    assert error.count("cannot load model") == 1


def test_a_split_weight_error_names_its_node(folder: Path, runtimes: OnnxRuntimeFactory) -> None:
    text = HEAD + (
        "  b: {model: classifier.onnx, inputs: {x: embed.z}}\n"
        "  ab:\n    split: [{to: a, weight: -1}, {to: b, weight: 1}]\n"
        "outputs:\n  p: ab.prob\n"
    )
    assert _errors(folder, runtimes, text) == [
        f"{_at(text, '-1}')}: split node 'ab': arm 1: 'weight' must be a number >= 0, got -1",
    ]
    zero = text.replace("weight: -1", "weight: 0").replace("weight: 1}", "weight: 0}")
    assert _errors(folder, runtimes, zero) == [
        f"{_at(zero, '[{to: a')}: split node 'ab': the weights are all zero; at least one arm needs a "
        "positive weight"
    ]


def test_a_negative_tolerance_names_the_key(folder: Path, runtimes: OnnxRuntimeFactory) -> None:
    shutil.copy(folder / "classifier.onnx", folder / "candidate.onnx")
    text = HEAD + (
        "  c: {shadow: a, model: candidate.onnx, compare: {prob: {abs_tol: -0.1}}}\noutputs:\n  p: a\n"
    )
    (error,) = _errors(folder, runtimes, text)
    assert "'abs_tol' must be at least 0, got -0.1" in error


def test_a_fallback_without_the_output_says_what_it_gives(folder: Path, runtimes: OnnxRuntimeFactory) -> None:
    text = (
        HEAD.replace("inputs: {x: embed.z}}", "inputs: {x: embed.z}, on_error: {fallback: h}}")
        + "  h: {model: scaler.onnx, inputs: {x: inputs.x}}\noutputs:\n  p: a\n"
    )
    (error,) = _errors(folder, runtimes, text)
    assert error.endswith(
        "node 'a': fallback 'h' must produce 'prob' as FP32 [-1, 1]; "
        "it has no 'prob' (its outputs: z FP32 [-1, 2])"
    )
