"""Shared helpers for the graph-language tests: write a graph folder, check or load it."""

from __future__ import annotations

import textwrap
from pathlib import Path

from engine.errors import Diagnostic
from engine.graph import CompiledGraph, check_graph, load_graph
from tests.fakes import FakeModel, FakeRuntimeFactory, linear_model

FRAUD = """\
graph: fraud
version: 3
inputs:
  amount:   {datatype: FP32, shape: [-1, 1]}
  features: {datatype: FP32, shape: [-1, 6]}
nodes:
  x:
    transform: concat
    inputs: [inputs.amount, inputs.features]
  ip_risk:
    model: ip_risk.onnx
    inputs: {x: x}
  risk_route:
    switch:
      - when: "inputs.amount > 1000"
        to: deep
      - default: light
  deep:  {model: deep.onnx,  inputs: {x: x}}
  light: {model: light.onnx, inputs: {x: x}}
  score:
    combine: mean
    inputs: [ip_risk.y, risk_route.y]
  decision:
    transform: threshold
    inputs: score
    value: 0.5
outputs:
  score: score
  decision: decision
"""


def fraud_models() -> dict[str, FakeModel | Exception]:
    return {
        "ip_risk.onnx": linear_model(width=7, scale=1.0),
        "deep.onnx": linear_model(width=7, scale=10.0),
        "light.onnx": linear_model(width=7, scale=-1.0),
    }


def write_graph(root: Path, text: str, models: dict[str, FakeModel | Exception], name: str = "fraud") -> Path:
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    for file in models:
        (folder / file).write_bytes(b"onnx")
    path = folder / "graph.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def diagnose(
    root: Path, text: str, models: dict[str, FakeModel | Exception] | None = None, name: str = "fraud"
) -> list[Diagnostic]:
    models = fraud_models() if models is None else models
    path = write_graph(root, text, models, name)
    return check_graph(
        path.read_text(), filename="graph.yaml", graph_dir=path.parent, runtimes=FakeRuntimeFactory(models)
    )


def load(root: Path, text: str, models: dict[str, FakeModel | Exception] | None = None) -> CompiledGraph:
    models = fraud_models() if models is None else models
    return load_graph(write_graph(root, text, models), FakeRuntimeFactory(models))


def only_error(diagnostics: list[Diagnostic]) -> Diagnostic:
    errors = [d for d in diagnostics if d.severity == "error"]
    assert len(errors) == 1, "\n".join(str(d) for d in diagnostics)
    return errors[0]


def line_of(text: str, needle: str, nth: int = 1) -> int:
    """1-based line of the nth line containing ``needle``."""
    hits = [i + 1 for i, line in enumerate(textwrap.dedent(text).splitlines()) if needle in line]
    return hits[nth - 1]
