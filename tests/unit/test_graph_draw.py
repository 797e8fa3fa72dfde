"""Drawings show the whole graph: fallbacks as edges to the node they back up, and each node's
marks (on_error, optional, timeout, batching, shadows), in Mermaid, DOT and the built-in SVG."""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.graph import CompiledGraph, draw, load_graph
from engine.runtimes.onnx import OnnxRuntimeFactory

GRAPH = """\
inputs:
  x: {datatype: FP32, shape: [-1, 4]}
nodes:
  embed:
    model: scaler.onnx
    inputs: {x: inputs.x}
    timeout: 20ms
    on_error: {fallback: backup}
    batching: {max_batch_size: 32, max_queue_delay: 2ms}
  backup: {model: scaler2.onnx, inputs: {x: inputs.x}}
  prob: {model: classifier.onnx, inputs: {x: embed.z}, on_error: {default: 0.5}}
  extra: {model: classifier2.onnx, inputs: {x: embed.z}, optional: true}
  candidate: {shadow: prob, model: candidate.onnx}
outputs:
  prob: prob
  extra: extra
"""


@pytest.fixture(scope="module")
def graph(tmp_path_factory: pytest.TempPathFactory, example_graphs: Path) -> Iterator[CompiledGraph]:
    folder = tmp_path_factory.mktemp("draw") / "drawn"
    folder.mkdir()
    models = example_graphs / "quickstart"
    for name, source in (("scaler", "scaler"), ("scaler2", "scaler"), ("classifier", "classifier"),
                         ("classifier2", "classifier"), ("candidate", "classifier")):  # fmt: skip
        shutil.copy(models / f"{source}.onnx", folder / f"{name}.onnx")
    (folder / "graph.yaml").write_text(GRAPH)
    runtimes = OnnxRuntimeFactory(max_workers=1, warmup_runs=1)
    loaded = load_graph(folder / "graph.yaml", runtimes)
    yield loaded
    loaded.close()
    runtimes.close()


def test_marks_name_how_each_node_fails_waits_and_runs(graph: CompiledGraph) -> None:
    marks = {node.name: node.marks for node in graph.plan.nodes}
    assert marks["embed"] == ("timeout 20ms", "on error: fallback backup", "batching ≤32 rows, 2ms")
    assert marks["prob"] == ("on error: default 0.5", "shadowed by candidate")
    assert marks["extra"] == ("optional",)
    assert marks["backup"] == ()


def test_mermaid_and_dot_draw_the_fallback_edge_and_the_marks(graph: CompiledGraph) -> None:
    mermaid = draw.to_mermaid(graph.plan)
    assert 'n_backup -.->|"fallback on error"| n_embed' in mermaid
    assert 'n_prob -.->|"compared"| n_candidate' in mermaid
    assert "[on error: fallback backup]" in mermaid and "[batching ≤32 rows, 2ms]" in mermaid
    assert "style n_extra stroke-dasharray: 5 5" in mermaid  # optional: a dashed border
    dot = draw.to_dot(graph.plan)
    assert 'n_backup -> n_embed [label="fallback on error", style=dashed];' in dot
    assert "\\n[timeout 20ms]" in dot and "\\n[optional]" in dot


def test_svg_is_drawn_without_graphviz_and_holds_every_node(graph: CompiledGraph) -> None:
    svg = draw.to_svg(graph.plan)
    root = ET.fromstring(svg)  # well-formed XML
    texts = [t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text")]
    for node in graph.plan.nodes:
        assert node.name in texts, node.name
    assert "fallback on error" in texts and "[optional]" in texts
    assert any(p.get("stroke-dasharray") for p in root.iter("{http://www.w3.org/2000/svg}path"))
