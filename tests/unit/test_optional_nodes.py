"""``optional: true``: a failing node leaves its outputs out instead of failing the request."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.errors import InvalidRequest
from engine.execution import PlanRunner
from engine.graph import load_graph
from tests.fakes import FakeModel, FakeRuntimeFactory, RecordingObserver, linear_model
from tests.unit.graph_cases import diagnose, line_of, only_error, write_graph

GRAPH = """\
graph: opt
inputs:
  x: {datatype: FP32, shape: [-1, 2]}
nodes:
  main: {model: main.onnx, inputs: {x: inputs.x}}
  extra:
    model: extra.onnx
    inputs: {x: inputs.x}
    optional: true
  extra_plus: {transform: expr, expr: "extra.y + 1"}
outputs:
  main: main.y
  extra: extra_plus
"""


def _models(fails: BaseException | None) -> dict[str, FakeModel | Exception]:
    extra = linear_model(width=2, scale=10.0)
    if fails is not None:

        def boom(x: np.ndarray) -> tuple[np.ndarray, ...]:
            raise fails

        extra.fn = boom
    return {"main.onnx": linear_model(width=2, scale=1.0), "extra.onnx": extra}


def _runner(tmp_path: Path, fails: BaseException | None, text: str = GRAPH) -> PlanRunner:
    models = _models(fails)
    return PlanRunner(
        load_graph(write_graph(tmp_path, text, models, name="opt"), FakeRuntimeFactory(models)).plan
    )


@pytest.mark.parametrize("fails", [RuntimeError("onnxruntime: bad input"), InvalidRequest("no")])
async def test_a_failing_optional_node_leaves_its_outputs_out(tmp_path: Path, fails: Exception) -> None:
    runner = _runner(tmp_path, fails)
    events = RecordingObserver()
    main, extra = await runner.run([np.ones((3, 2), np.float32)], observer=events)
    np.testing.assert_allclose(main, [[2.0]] * 3)
    assert extra is None
    by_node = {e.node: e for e in events.events}
    assert (
        by_node["extra"].error is not None
        and "(recovered: optional, outputs left out)" in by_node["extra"].error
    )
    assert by_node["extra_plus"].error == "skipped: an input comes from an optional node that failed"
    assert runner.stats.nodes["extra"].fail.count == 1
    assert (
        runner.stats.nodes["extra_plus"].fail.count == 0
        and runner.stats.nodes["extra_plus"].success.count == 0
    )


async def test_when_it_works_everything_is_served(tmp_path: Path) -> None:
    main, extra = await _runner(tmp_path, None).run([np.ones((1, 2), np.float32)])
    np.testing.assert_allclose(main, [[2.0]])
    np.testing.assert_allclose(extra, [[21.0]])


@pytest.mark.parametrize(
    ("old", "new", "message", "needle"),
    [
        ("optional: true", "optional: yes please", "'optional' must be true or false", "optional:"),
        (
            "optional: true",
            "optional: true\n    on_error: {default: 0}",
            "'optional: true' and 'on_error: default' both say what a failure does",
            "optional:",
        ),
    ],
)
def test_mistakes(tmp_path: Path, old: str, new: str, message: str, needle: str) -> None:
    text = GRAPH.replace(old, new)
    error = only_error(diagnose(tmp_path, text, _models(None), name="opt"))
    assert message in error.message and error.line == line_of(text, needle)


def test_a_branch_cannot_be_optional(tmp_path: Path) -> None:
    text = GRAPH.replace(
        "  extra_plus:",
        "  route:\n    switch:\n      - {when: 'main.y > 0', to: extra}\n      - default: main2\n"
        "  main2: {model: main.onnx, inputs: {x: inputs.x}}\n  extra_plus:",
    ).replace('expr: "extra.y + 1"', 'expr: "route.y + 1"')
    error = only_error(diagnose(tmp_path, text, _models(None), name="opt"))
    assert "runs for switch 'route' only; it cannot be optional" in error.message
