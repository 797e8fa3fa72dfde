"""Property-based: no text, however hostile, makes graph checking raise; it only reports."""

from __future__ import annotations

import contextlib
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.errors import Diagnostic
from engine.graph import check_graph
from engine.graph.ops.expressions import ExprError
from engine.graph.ops.expressions import parse as parse_expression
from tests.fakes import FakeRuntimeFactory, linear_model

KEYS = [
    "graph", "version", "inputs", "nodes", "outputs", "logging", "model", "transform", "expr", "switch",
    "split", "combine", "when", "to", "default", "weight", "key", "datatype", "shape", "inputs.x", "x", "m",
]  # fmt: skip
SCALARS = st.one_of(
    st.sampled_from(["FP32", "BYTES", "-1", "x", "m.onnx", "../m.onnx", "/etc/passwd", "concat", "expr",
                     "inputs.x", "x.y", "no", "~", "&a", "*a", "!!python/name:os.system", "1e309", "[", "{"]),
    st.integers(-3, 10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
)  # fmt: skip
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(KEYS), inner, max_size=4)
    ),
    max_leaves=25,
)


def _yaml(value: object, indent: int = 0) -> str:
    pad = "  " * indent
    if isinstance(value, dict):
        lines = [
            f"{pad}{k}:\n{_yaml(v, indent + 1)}"
            if isinstance(v, (dict, list)) and v
            else f"{pad}{k}: {_scalar(v)}\n"
            for k, v in value.items()
        ]
        return "".join(lines) or f"{pad}{{}}\n"
    if isinstance(value, list):
        lines = [
            f"{pad}-\n{_yaml(v, indent + 1)}"
            if isinstance(v, (dict, list)) and v
            else f"{pad}- {_scalar(v)}\n"
            for v in value
        ]
        return "".join(lines) or f"{pad}[]\n"
    return f"{pad}{_scalar(value)}\n"


def _scalar(value: object) -> str:
    if isinstance(value, (dict, list)):
        return "{}" if isinstance(value, dict) else "[]"
    return str(value)


FACTORY = FakeRuntimeFactory({"m.onnx": linear_model()})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=6))
def test_structured_garbage_only_produces_diagnostics(doc: dict) -> None:  # type: ignore[type-arg]
    diagnostics = check_graph(
        _yaml(doc), filename="graph.yaml", graph_dir=Path("/nonexistent"), runtimes=FACTORY
    )
    assert all(isinstance(d, Diagnostic) and d.line >= 1 for d in diagnostics)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_arbitrary_text_only_produces_diagnostics(text: str) -> None:
    diagnostics = check_graph(text, filename="graph.yaml", graph_dir=Path("/nonexistent"), runtimes=FACTORY)
    assert all(isinstance(d, Diagnostic) for d in diagnostics)


TOKENS = [*"ab.()+-*/<>=! 0123456789_,x'", "and", "or", "not", "__", "import", "lambda"]


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(TOKENS), max_size=30).map("".join))
def test_expressions_parse_or_report_never_crash(text: str) -> None:
    with contextlib.suppress(ExprError):  # the parser's own report, with a column; anything else is a bug
        parse_expression(text)


def test_a_control_character_is_a_located_diagnostic_not_a_crash() -> None:
    # Found by the property test above: PyYAML rejects it while constructing its reader.
    (diagnostic,) = check_graph(
        "graph: a\nnodes: b\x1f\n", filename="g.yaml", graph_dir=Path("/x"), runtimes=FACTORY
    )
    assert (diagnostic.line, diagnostic.col) == (2, 9) and "U+001F" in diagnostic.message
