"""``rollout:`` as the modeller writes it: read into a ``RolloutSpec``, every mistake reported at its
line and column, checked with the real onnxruntime factory on the quickstart's models."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.graph import check_graph
from engine.graph.reading.graph_reader import read_graph
from engine.graph.reading.source import load_yaml
from engine.graph.values.diagnostics import Report
from engine.graph.values.spec import RolloutGates, RolloutStep
from engine.runtimes.onnx import OnnxRuntimeFactory

GRAPH = """\
inputs:
  x: {datatype: FP32, shape: [-1, 4]}
nodes:
  embed: {model: scaler.onnx, inputs: {x: inputs.x}}
  a: {model: classifier.onnx, inputs: {x: embed.z}}
outputs:
  prob: a.prob
"""

PLAN = """\
rollout:
  steps:
    - shadow: {requests: 200}
    - canary: {weight: 0.05, requests: 300}
    - canary: {weight: 0.5, duration: 10m}
    - promote
  gates:
    max_error_rate_increase: 0.01
    max_p99_ratio: 2.0
    min_agreement: {prob: 0.95}
    min_requests: 50
  compare: {prob: {abs_tol: 0.01}}
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
    before = text[: text.index(fragment)]
    return f"{before.count(chr(10)) + 1}:{len(before) - before.rfind(chr(10))}"


def _errors(folder: Path, runtimes: OnnxRuntimeFactory, text: str) -> list[str]:
    diagnostics = check_graph(text, filename="graph.yaml", graph_dir=folder, runtimes=runtimes)
    return [f"{d.line}:{d.col}: {d.message}" for d in diagnostics if d.severity == "error"]


def test_a_plan_is_read_whole(folder: Path, runtimes: OnnxRuntimeFactory) -> None:
    text = GRAPH + PLAN
    assert _errors(folder, runtimes, text) == []
    report = Report("graph.yaml")
    doc = load_yaml(text, report)
    assert doc is not None
    spec = read_graph(doc, report, file="graph.yaml", default_name="g", folder_version=None)
    assert spec is not None and spec.rollout is not None
    assert [(s.kind, s.weight, s.requests) for s in spec.rollout.steps] == [
        ("shadow", 0.0, 200),
        ("canary", 0.05, 300),
        ("canary", 0.5, 0),
        ("promote", 1.0, 0),
    ]
    assert spec.rollout.steps[2].duration_s == 600.0
    assert spec.rollout.gates == RolloutGates(0.01, 2.0, {"prob": 0.95}, 50)
    assert spec.rollout.compare == {"prob": {"abs_tol": 0.01}}
    assert isinstance(spec.rollout.steps[0], RolloutStep)


@pytest.mark.parametrize(
    ("old", "new", "fragment", "message"),
    [
        ("    - promote\n", "", "canary: {weight: 0.5, duration", "the last rollout step must be 'promote'"),
        (
            "weight: 0.05",
            "weight: 1.5",
            "1.5",
            "'canary' needs 'weight', a share of requests greater than 0 and at most 1, got the number 1.5",
        ),
        (
            "requests: 200",
            "requests: -3",
            "-3",
            "'shadow' needs 'requests', a positive whole number, got the number -3",
        ),
        ("- shadow:", "- canery:", "canery", "unknown rollout step 'canery'; did you mean 'canary'?"),
        (
            "prob: 0.95",
            "porb: 0.95",
            "porb",
            "'min_agreement' names output 'porb', not served; did you mean 'prob'?",
        ),
        (
            "max_p99_ratio: 2.0",
            "max_p99_ratio: 0",
            "0\n",
            "'max_p99_ratio' must be a number greater than 0, got the number 0",
        ),
        (
            "min_requests: 50",
            "min_requests: many",
            "many",
            "'min_requests' must be a positive whole number, got the text 'many'",
        ),
        ("    - promote\n", "    - promote\n    - promote\n", "promote", "'promote' must be the last step"),
        (
            "canary: {weight: 0.05, requests: 300}",
            "canary: {weight: 0.05}",
            "canary: {weight: 0.05}",
            "'canary' needs 'requests' (a positive whole number) or 'duration' (e.g. 10m)",
        ),
        (
            "  compare:",
            "  sticky: inputs.user\n  compare:",
            "inputs.user",
            "'sticky' names input 'user', not declared (inputs: x)",
        ),
        (
            "  compare:",
            "  sticky: user\n  compare:",
            "user",
            "'sticky' must name a graph input as inputs.NAME, got the text 'user'",
        ),
    ],
)
def test_each_mistake_is_reported_where_it_is(
    folder: Path, runtimes: OnnxRuntimeFactory, old: str, new: str, fragment: str, message: str
) -> None:
    text = GRAPH + PLAN.replace(old, new, 1)
    assert _errors(folder, runtimes, text) == [f"{_at(text, fragment)}: {message}"]


def test_agreement_needs_a_shadow_step(folder: Path, runtimes: OnnxRuntimeFactory) -> None:
    text = GRAPH + PLAN.replace("    - shadow: {requests: 200}\n", "")
    assert _errors(folder, runtimes, text) == [
        f"{_at(text, 'min_agreement')}: 'min_agreement' is measured in a shadow step; "
        "add '- shadow: {requests: N}' to 'steps'"
    ]
