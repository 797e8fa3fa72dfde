"""Every kind of diagnostic: its message and the line it points at; all problems at once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine.errors import GraphInvalid
from engine.graph import load_graph
from tests.fakes import FakeModel, FakeRuntimeFactory, linear_model
from tests.unit.graph_cases import FRAUD, diagnose, fraud_models, line_of, only_error, write_graph


def _variant(old: str, new: str) -> str:
    assert old in FRAUD, old
    return FRAUD.replace(old, new, 1)


def test_the_example_graph_is_valid(tmp_path: Path) -> None:
    assert diagnose(tmp_path, FRAUD) == []


# (replace this, with this, expected message fragment, line holding this text)
CASES = [
    (
        "version: 3",
        "versoin: 3",
        "unknown key 'versoin' in the graph file; did you mean 'version'?",
        "versoin",
    ),
    (
        "datatype: FP32, shape: [-1, 1]",
        "datatype: FP23, shape: [-1, 1]",
        "unknown datatype 'FP23'; did you mean 'FP32'?",
        "FP23",
    ),
    (
        "shape: [-1, 6]",
        "shape: [-1, 0]",
        "shape dimension 1 must be a positive whole number or -1",
        "[-1, 0]",
    ),
    ("shape: [-1, 6]", "shape: 6", "'shape' must be a non-empty list", "shape: 6"),
    ("version: 3", "version: three", "'version' must be a positive whole number", "three"),
    ("graph: fraud", "graph: fraud2", "graph name 'fraud2' does not match its folder 'fraud'", "fraud2"),
    (
        "    inputs: [ip_risk.y, risk_route.y]",
        "    inputs: [ip_risk.y, risk_route.y]\n    weights: [1, 2]",
        "('weights' is an argument of 'weighted_mean')",
        "weights",
    ),
    ("combine: mean", "combine: meen", "unknown combine 'meen'; did you mean 'mean'?", "meen"),
    (
        "transform: concat",
        "transform: concat\n    combine: mean",
        "node 'x' has both 'transform' and 'combine'",
        "combine: mean",
    ),
    ("transform: threshold", "transfrom: threshold", "node 'decision' has no kind", "decision:"),
    (
        "  x:\n    transform: concat",
        "  x:\n    shadow: deep\n    transform: concat",
        "node 'x' has both 'shadow' and 'transform'; a node has exactly one kind",
        "transform: concat",
    ),
    (
        "inputs: [ip_risk.y, risk_route.y]",
        "inputs: [ip_risk.z, risk_route.y]",
        "node 'ip_risk' has no output 'z' (its outputs: y)",
        "ip_risk.z",
    ),
    (
        "inputs: [ip_risk.y, risk_route.y]",
        "inputs: [ip_risky.y, risk_route.y]",
        "unknown node 'ip_risky'; did you mean 'ip_risk'?",
        "ip_risky",
    ),
    (
        "inputs: [inputs.amount, inputs.features]",
        "inputs: [inputs.amout, inputs.features]",
        "unknown graph input 'amout'; did you mean 'amount'?",
        "amout",
    ),
    (
        "inputs: [ip_risk.y, risk_route.y]",
        "inputs: [ip_risk.y, deep.y]",
        "node 'deep' is a branch of switch 'risk_route'",
        "deep.y]",
    ),
    (
        'when: "inputs.amount > 1000"',
        'when: "inputs.amount >> 1000"',
        "switch 'risk_route': expression: expected a value, found '>'",
        ">>",
    ),
    (
        'when: "inputs.amount > 1000"',
        'when: "amount + 1"',
        "condition gives FP32, it must give BOOL",
        "amount + 1",
    ),
    (
        'when: "inputs.amount > 1000"',
        'when: "inputs.features > 1000"',
        "it must give one BOOL per row",
        "features > 1000",
    ),
    (
        "      - default: light",
        "      - when: inputs.amount < 5\n        to: light",
        "needs a final {default: NODE} case",
        "switch:",
    ),
    (
        "  light: {model: light.onnx, inputs: {x: x}}",
        "  light: {model: light2.onnx, inputs: {x: x}}",
        "model file 'light2.onnx' not found in the graph folder; did you mean 'light.onnx'?",
        "light2",
    ),
    (
        "  light: {model: light.onnx, inputs: {x: x}}",
        "  light: {model: ../light.onnx, inputs: {x: x}}",
        "'..' is not allowed",
        "../light",
    ),
    (
        "  light: {model: light.onnx, inputs: {x: x}}",
        "  light: {model: /etc/light.onnx, inputs: {x: x}}",
        "must be relative to the graph folder",
        "/etc/light",
    ),
    (
        "  light: {model: light.onnx, inputs: {x: x}}",
        "  light: {model: light.onnx, inputs: {xx: x}}",
        "model 'light.onnx' has no input 'xx'; did you mean 'x'?",
        "xx: x",
    ),
    (
        "  light: {model: light.onnx, inputs: {x: x}}",
        "  light: {model: light.onnx, inputs: {x: inputs.features}}",
        "expects FP32 [-1, 7], but 'inputs.features' is FP32 [-1, 6]: dimension 1 is 6",
        "light: {",
    ),
    (
        "  light: {model: light.onnx, inputs: {x: x}}",
        "  light: {model: light.onnx, inputs: {x: x}, timeout: soon}",
        "'timeout' must be a positive duration",
        "soon",
    ),
    (
        "  light: {model: light.onnx, inputs: {x: x}}",
        "  light: {model: light.onnx, inputs: {x: x}, execution: fast}",
        "unknown execution mode 'fast'",
        "fast",
    ),
    ("  score: score", "  score: scor", "unknown node 'scor'; did you mean 'score'?", "score: scor"),
    ("  decision: decision\n", "", "node 'decision' is not used by any graph output", "decision:"),
]


@pytest.mark.parametrize(("old", "new", "message", "where"), CASES, ids=[c[2][:40] for c in CASES])
def test_each_diagnostic_names_the_problem_and_its_line(
    tmp_path: Path, old: str, new: str, message: str, where: str
) -> None:
    text = _variant(old, new)
    error = only_error(diagnose(tmp_path, text))
    assert message in error.message
    assert error.line == line_of(text, where.rstrip("\n")), str(error)


def test_misspelt_argument_also_reports_the_missing_one(tmp_path: Path) -> None:
    text = _variant("    value: 0.5", "    valeu: 0.5")
    errors = diagnose(tmp_path, text)
    assert [e.message for e in errors] == [
        "node 'decision': transform 'threshold': needs 'value'",
        "unknown key 'valeu' in transform 'threshold' node 'decision'; did you mean 'value'?",
    ]
    assert [e.line for e in errors] == [line_of(text, "threshold"), line_of(text, "valeu")]


def test_expression_errors_point_at_the_column(tmp_path: Path) -> None:
    text = _variant('when: "inputs.amount > 1000"', 'when: "inputs.amount > 1000 and amont > 1"')
    error = only_error(diagnose(tmp_path, text))
    assert "unknown name 'amont'; did you mean 'amount'?" in error.message
    line = text.splitlines()[error.line - 1]
    assert line[error.col - 1 :].startswith("amont")


def test_multiple_errors_are_reported_at_once_in_file_order(tmp_path: Path) -> None:
    text = _variant("version: 3", "versoin: 3")
    text = text.replace("light.onnx, inputs: {x: x}", "light.onnx, inputs: {x: x}, execution: fast")
    text = text.replace("value: 0.5", "value: high")
    text = text.replace("{x: x}}\n  light", "{x: inputs.amount}}\n  light")
    errors = diagnose(tmp_path, text)
    messages = [e.message for e in errors]
    assert len(errors) == 4, messages
    assert [e.line for e in errors] == sorted(e.line for e in errors)
    assert "versoin" in messages[0] and "FP32 [-1, 1]" in messages[1]
    assert "fast" in messages[2] and "'value' must be a number" in messages[3]


def test_cycle(tmp_path: Path) -> None:
    text = _variant("    inputs: [inputs.amount, inputs.features]", "    inputs: [inputs.amount, decision]")
    errors = diagnose(tmp_path, text)
    cycle = [e for e in errors if "cycle" in e.message]
    assert len(cycle) == 1 and cycle[0].line == line_of(text, "  x:")
    assert "x -> ip_risk -> score -> decision -> x" in cycle[0].message or "x ->" in cycle[0].message


def test_branches_with_different_outputs(tmp_path: Path) -> None:
    models = fraud_models()
    models["light.onnx"] = linear_model(width=7, out_name="p")
    error = only_error(diagnose(tmp_path, FRAUD, models))
    assert (
        "branch 'light' outputs (p FP32 [-1, 1]) differ from branch 'deep' (y FP32 [-1, 1])" in error.message
    )
    assert error.line == line_of(FRAUD, "default: light")


def test_unloadable_model_is_reported_at_its_model_value(tmp_path: Path) -> None:
    models: dict[str, FakeModel | Exception] = {**fraud_models(), "deep.onnx": ValueError("not an ONNX file")}
    error = only_error(diagnose(tmp_path, FRAUD, models))
    assert error.message == "cannot load model 'deep.onnx': not an ONNX file"
    assert error.line == line_of(FRAUD, "deep.onnx")


def test_symlink_escaping_the_graph_folder(tmp_path: Path) -> None:
    outside = tmp_path / "outside.onnx"
    outside.write_bytes(b"x")
    path = write_graph(tmp_path, FRAUD, fraud_models())
    (path.parent / "light.onnx").unlink()
    os.symlink(outside, path.parent / "light.onnx")
    error = only_error(diagnose(tmp_path, FRAUD))
    assert "resolves outside the graph folder (through a symlink)" in error.message


def test_unwired_model_input_and_dtype_mismatch(tmp_path: Path) -> None:
    text = _variant(
        "  ip_risk:\n    model: ip_risk.onnx\n    inputs: {x: x}",
        "  ip_risk:\n    model: ip_risk.onnx\n    inputs: {}",
    )
    error = only_error(diagnose(tmp_path, text))
    assert "input 'x' (FP32 [-1, 7]) of model 'ip_risk.onnx' is not wired" in error.message
    text = FRAUD.replace("features: {datatype: FP32", "features: {datatype: FP64")
    errors = diagnose(tmp_path, text)
    assert "'inputs.features' is FP64" in errors[0].message and "add a cast transform" in errors[0].message


def test_load_graph_raises_with_all_diagnostics_and_closes_models(tmp_path: Path) -> None:
    models = fraud_models()
    text = FRAUD.replace("combine: mean", "combine: meen")
    path = write_graph(tmp_path, text, models)
    with pytest.raises(GraphInvalid) as info:
        load_graph(path, FakeRuntimeFactory(models))
    assert len(info.value.diagnostics) == 1 and "meen" in str(info.value)
    assert all(m.closed for m in models.values() if isinstance(m, FakeModel))


def test_yes_as_a_node_name_is_text_not_a_boolean(tmp_path: Path) -> None:
    text = FRAUD.replace("  decision:\n", "  yes:\n").replace("decision: decision", "decision: yes")
    assert diagnose(tmp_path, text) == []


def test_a_hard_linked_model_file_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import os

    from engine.graph import check_graph
    from tests.fakes import FakeRuntimeFactory, linear_model

    outside = tmp_path / "elsewhere.onnx"
    outside.write_bytes(b"weights")
    folder = tmp_path / "g"
    folder.mkdir()
    os.link(outside, folder / "m.onnx")
    text = (
        "inputs: {x: {datatype: FP32, shape: [-1, 1]}}\n"
        "nodes:\n  m: {model: m.onnx, inputs: {x: inputs.x}}\n"
        "outputs: {y: m.y}\n"
    )
    diagnostics = check_graph(text, filename="graph.yaml", graph_dir=folder,
                              runtimes=FakeRuntimeFactory({"m.onnx": linear_model()}))  # fmt: skip
    assert any("hard links" in d.message and d.line == 3 for d in diagnostics), [str(d) for d in diagnostics]
