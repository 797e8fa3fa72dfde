"""Compiler output (slots, stages, branches), routers, drawings, repository layout."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from engine.execution import PlanRunner
from engine.graph import find_graph_files
from engine.graph.draw import to_dot, to_mermaid
from engine.graph.ops.routers import key_buckets, random_split_router, sticky_split_router
from engine.graph.values.plan import FunctionStep, ModelStep, RouteStep
from tests.fakes import linear_model
from tests.unit.graph_cases import FRAUD, diagnose, load, write_graph


def test_slots_stages_and_node_infos(tmp_path: Path) -> None:
    graph = load(tmp_path, FRAUD)
    plan = graph.plan
    assert graph.name == "fraud" and graph.version == "3" and plan.version == "3"
    assert plan.slot_names[:2] == ("inputs.amount", "inputs.features")
    assert plan.batch_inputs == (0, 1)
    names = [[s.name for s in stage] for stage in plan.stages]
    assert names == [["x"], ["ip_risk", "risk_route"], ["score"], ["decision"]]
    assert all(n.name not in ("deep", "light") for stage in plan.stages for n in stage)
    x = plan.stages[0][0]
    assert isinstance(x, FunctionStep) and x.inputs == (0, 1) and plan.slot_names[x.outputs[0]] == "x.output"
    route = plan.stages[1][1]
    assert isinstance(route, RouteStep) and route.kind == "switch" and route.inputs == (0,)
    assert [b.label for b in route.branches] == ["deep", "light"]
    deep = route.branches[0]
    assert isinstance(deep.steps[0], ModelStep) and deep.row_inputs == (x.outputs[0],)
    assert plan.slot_names[deep.results[0]] == "deep.y"
    assert plan.slot_names[route.outputs[0]] == "risk_route.y"
    assert [(o.name, o.datatype.value, o.shape) for o in plan.outputs] == [
        ("score", "FP32", (-1, 1)),
        ("decision", "BOOL", (-1, 1)),
    ]
    assert [plan.slot_names[s] for s in plan.output_slots] == ["score.output", "decision.output"]
    info = {n.name: n for n in plan.nodes}
    assert info["risk_route"].branches == ("deep", "light") and info["deep"].model_path == "deep.onnx"
    assert info["score"].inputs == ("ip_risk.y", "risk_route.y") and info["x"].line == 7
    assert set(graph.models) == {"ip_risk.onnx", "deep.onnx", "light.onnx"}
    assert graph.source_sha256 == hashlib.sha256(graph.source_path.read_bytes()).hexdigest()


async def test_compiled_plan_runs_end_to_end(tmp_path: Path) -> None:
    graph = load(tmp_path, FRAUD)
    amount = np.array([[1.0], [2000.0], [5.0]], np.float32)
    features = np.ones((3, 6), np.float32)
    score, decision = await PlanRunner(graph.plan).run([amount, features])
    # ip_risk = sum * 1, deep = sum * 10, light = sum * -1; score = mean of ip_risk and the route
    expected = np.array([[(7 - 7) / 2], [(2006 + 20060) / 2], [(11 - 11) / 2]], np.float32)
    np.testing.assert_allclose(score, expected)
    assert decision.tolist() == [[False], [True], [False]]


def test_switch_router_first_true_wins_and_accepts_1d_masks(tmp_path: Path) -> None:
    text = FRAUD.replace(
        '      - when: "inputs.amount > 1000"\n        to: deep\n',
        '      - when: "inputs.amount[:, 0] > 1000"\n        to: deep\n',
    )
    assert diagnose(tmp_path, text)  # no indexing in expressions
    text = FRAUD.replace(
        '      - when: "inputs.amount > 1000"\n        to: deep\n',
        '      - when: "inputs.amount > 1000"\n        to: deep\n'
        '      - when: "inputs.amount > 10"\n        to: light\n'
        '      - when: "inputs.amount > 0"\n        to: deep\n',
    )
    route = load(tmp_path, text).plan.stages[1][1]
    assert isinstance(route, RouteStep) and len(route.branches) == 2  # deep named twice: one branch
    amount = np.array([[5000.0], [50.0], [5.0], [-1.0]], np.float32)
    assert route.router([amount]).tolist() == [0, 1, 0, 1]
    assert route.router([amount[:, 0]]).tolist() == [0, 1, 0, 1]
    assert route.router([amount]).dtype == np.intp


SPLIT = """\
inputs:
  user: {datatype: BYTES, shape: [-1]}
  x: {datatype: FP32, shape: [-1, 1]}
nodes:
  ab:
    split:
      - {to: a, weight: 90}
      - {to: b, weight: 10}
    key: inputs.user
  a: {model: a.onnx, inputs: [inputs.x]}
  b: {model: b.onnx, inputs: [inputs.x]}
outputs:
  y: ab.y
"""


def test_sticky_split_is_stable_and_proportional(tmp_path: Path) -> None:
    models = {"a.onnx": linear_model(), "b.onnx": linear_model()}
    route = load(tmp_path, SPLIT, models).plan.stages[0][0]
    assert isinstance(route, RouteStep) and route.kind == "split" and route.inputs == (0,)
    keys = np.array([f"user-{i}".encode() for i in range(20000)], dtype=object)
    first = route.router([keys])
    assert np.array_equal(first, route.router([keys[::-1]])[::-1])  # a key's arm ignores its batch mates
    share = float((first == 0).mean())
    assert abs(share - 0.9) < 0.01  # 20000 draws: 4 standard deviations is ~0.0085
    again = sticky_split_router([90, 10], "ab")([keys])
    assert np.array_equal(first, again)


def test_split_key_hash_is_type_agnostic_and_salted() -> None:
    as_text = key_buckets(np.array([b"42", "42"], dtype=object), "s")
    as_int = key_buckets(np.array([[42], [42]], np.int64), "s")
    assert as_text[0] == as_text[1] == as_int[0] == as_int[1]
    assert key_buckets(np.array([42]), "other")[0] != as_int[0]
    assert ((as_text >= 0) & (as_text < 1)).all()


def test_random_split_respects_weights_and_zero_weight_arms() -> None:
    router = random_split_router([1, 0, 3], np.random.default_rng(7))
    chosen = router([np.zeros((40000, 1))])
    counts = np.bincount(chosen, minlength=3) / 40000
    assert counts[1] == 0 and abs(counts[2] - 0.75) < 0.01


def test_keyless_split_reads_a_row_aligned_slot(tmp_path: Path) -> None:
    models = {"a.onnx": linear_model(), "b.onnx": linear_model()}
    keyless = SPLIT.replace("    key: inputs.user\n", "").replace(
        "  user: {datatype: BYTES, shape: [-1]}\n", ""
    )
    plan = load(tmp_path, keyless, models).plan
    route = plan.stages[0][0]
    assert isinstance(route, RouteStep) and plan.slot_names[route.inputs[0]] == "inputs.x"


NESTED = """\
inputs:
  x: {datatype: FP32, shape: [-1, 1]}
nodes:
  outer:
    switch:
      - when: "x > 0"
        to: inner
      - default: c
  inner:
    switch:
      - when: "x > 10"
        to: a
      - default: b
  a: {model: a.onnx, inputs: {x: inputs.x}}
  b: {model: b.onnx, inputs: {x: inputs.x}}
  c: {model: c.onnx, inputs: {x: inputs.x}}
outputs:
  y: outer
"""


async def test_nested_switch_compiles_into_branches_and_runs(tmp_path: Path) -> None:
    models = {
        "a.onnx": linear_model(scale=100.0),
        "b.onnx": linear_model(scale=10.0),
        "c.onnx": linear_model(scale=-1.0),
    }
    plan = load(tmp_path, NESTED, models).plan
    assert len(plan.stages) == 1 and len(plan.stages[0]) == 1
    outer = plan.stages[0][0]
    assert isinstance(outer, RouteStep)
    inner = outer.branches[0].steps[0]
    assert isinstance(inner, RouteStep) and outer.branches[0].row_inputs == (0,)
    (y,) = await PlanRunner(plan).run([np.array([[20.0], [5.0], [-3.0]], np.float32)])
    assert y.tolist() == [[2000.0], [50.0], [3.0]]


def test_drawings_show_nodes_edges_and_conditions(tmp_path: Path) -> None:
    plan = load(tmp_path, FRAUD).plan
    mermaid = to_mermaid(plan)
    assert mermaid.startswith("flowchart LR")
    assert 'n_risk_route -.->|"inputs.amount > 1000"| n_deep' in mermaid
    assert 'n_risk_route -.->|"default"| n_light' in mermaid
    assert 'n_ip_risk -->|"y"| n_score' in mermaid
    assert "out_decision" in mermaid
    dot = to_dot(plan)
    assert dot.startswith('digraph "fraud" {') and dot.rstrip().endswith("}")
    assert 'n_ip_risk [shape=box, label="ip_risk\\nmodel: ip_risk.onnx"];' in dot
    assert 'n_risk_route -> n_deep [label="inputs.amount > 1000", style=dashed];' in dot


def test_find_graph_files_and_version_folders(tmp_path: Path) -> None:
    single = FRAUD.replace("version: 3\n", "")
    write_graph(tmp_path, single.replace("graph: fraud", "graph: alpha"), {}, name="alpha")
    write_graph(tmp_path, single.replace("graph: fraud", "graph: beta"), {}, name="beta/2")
    write_graph(tmp_path, single.replace("graph: fraud", "graph: beta"), {}, name="beta/10")
    (tmp_path / "empty").mkdir()
    found = [p.relative_to(tmp_path).as_posix() for p in find_graph_files(tmp_path)]
    assert found == ["alpha/graph.yaml", "beta/2/graph.yaml", "beta/10/graph.yaml"]
    errors = diagnose(tmp_path, FRAUD.replace("graph: fraud", "graph: beta"), name="beta/2")
    assert [e.message for e in errors] == ["'version: 3' disagrees with its version folder '2'"]
