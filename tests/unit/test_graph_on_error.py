"""on_error: a node that fails or times out is covered by a default or a fallback node."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.errors import DeadlineExceeded, GraphInvalid
from engine.execution import PlanRunner
from engine.graph import check_graph, load_graph
from tests.fakes import FakeRuntimeFactory, RecordingObserver, linear_model

HEADER = "inputs:\n  x: {datatype: FP32, shape: [-1, 1]}\nnodes:\n"
WITH_DEFAULT = HEADER + (
    "  risky: {model: slow.onnx, inputs: {x: inputs.x}, timeout: 20ms, on_error: {default: 0.5}}\n"
    '  after: {transform: expr, expr: "risky.y * 2"}\n'
    "outputs:\n  y: after\n"
)
WITH_FALLBACK = HEADER + (
    "  risky: {model: slow.onnx, inputs: {x: inputs.x}, timeout: 20ms, on_error: {fallback: safe}}\n"
    "  safe: {model: fast.onnx, inputs: {x: inputs.x}}\n"
    "outputs:\n  y: risky.y\n"
)
WITHOUT = (
    HEADER + "  risky: {model: slow.onnx, inputs: {x: inputs.x}, timeout: 20ms}\noutputs:\n  y: risky.y\n"
)
FALLBACK_USED_ELSEWHERE = HEADER + (
    "  risky: {model: slow.onnx, inputs: {x: inputs.x}, on_error: {fallback: safe}}\n"
    "  safe: {model: fast.onnx, inputs: {x: inputs.x}}\n"
    "  both: {combine: mean, inputs: [risky.y, safe.y]}\n"
    "outputs:\n  y: both\n"
)


def _graph(tmp_path: Path, text: str) -> Path:
    for name in ("slow.onnx", "fast.onnx"):
        (tmp_path / name).write_bytes(b"fake")
    path = tmp_path / "graph.yaml"
    path.write_text(text)
    return path


def _factory() -> FakeRuntimeFactory:
    slow = linear_model(scale=100.0)
    slow.delay_s = 1.0
    return FakeRuntimeFactory({"slow.onnx": slow, "fast.onnx": linear_model(scale=-1.0)})


async def test_a_timed_out_node_is_covered_by_its_default(tmp_path: Path) -> None:
    runner = PlanRunner(load_graph(_graph(tmp_path, WITH_DEFAULT), _factory()).plan)
    observer = RecordingObserver()
    (out,) = await runner.run([np.ones((3, 1), np.float32)], observer=observer)
    np.testing.assert_array_equal(out, np.full((3, 1), 1.0, np.float32))
    assert out.dtype == np.float32
    risky = next(e for e in observer.events if e.node == "risky")
    assert "timeout" in (risky.error or "") and "(recovered: default)" in (risky.error or "")
    assert runner.stats.nodes["risky"].fail.count == 1 and runner.stats.nodes["risky"].success.count == 0


async def test_a_timed_out_node_is_covered_by_its_fallback_node(tmp_path: Path) -> None:
    graph = load_graph(_graph(tmp_path, WITH_FALLBACK), _factory())
    assert [s.name for stage in graph.plan.stages for s in stage] == ["risky"]  # safe runs only on failure
    (out,) = await PlanRunner(graph.plan).run([np.array([[1.0], [2.0]], np.float32)])
    np.testing.assert_array_equal(out, [[-1.0], [-2.0]])


async def test_without_on_error_the_timeout_fails_the_request(tmp_path: Path) -> None:
    with pytest.raises(DeadlineExceeded, match="risky"):
        await PlanRunner(load_graph(_graph(tmp_path, WITHOUT), _factory()).plan).run(
            [np.ones((1, 1), np.float32)]
        )


@pytest.mark.parametrize(
    ("on_error", "message"),
    [
        ("retry", "'on_error' must be fail, {default: VALUE} or {fallback: NODE}"),
        ("{defualt: 1}", "unknown on_error action 'defualt'; did you mean 'default'?"),
        ("{default: high}", "on_error default must be a number or true/false"),
        ("{fallback: nowhere}", "unknown node 'nowhere'"),
        (
            "{fallback: wide}",
            "fallback 'wide' must produce 'y' as FP32 [-1, 1]; "
            "it has no 'y' (its outputs: output FP32 [-1, 1])",
        ),
    ],
)
def test_on_error_mistakes_are_reported_where_written(tmp_path: Path, on_error: str, message: str) -> None:
    text = HEADER + (
        f"  risky: {{model: slow.onnx, inputs: {{x: inputs.x}}, on_error: {on_error}}}\n"
        "  wide: {transform: identity, inputs: inputs.x}\n"
        "outputs:\n  y: risky.y\n  z: wide\n"
    )
    folder = _graph(tmp_path, text).parent
    diagnostics = check_graph(text, filename="graph.yaml", graph_dir=folder, runtimes=_factory())
    assert any(message in d.message and d.line == 4 for d in diagnostics), [str(d) for d in diagnostics]


def test_a_fallback_node_cannot_be_used_elsewhere(tmp_path: Path) -> None:
    with pytest.raises(GraphInvalid, match="safe"):
        load_graph(_graph(tmp_path, FALLBACK_USED_ELSEWHERE), _factory())
