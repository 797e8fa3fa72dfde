"""The expression language: parsing, precedence, typing, evaluation, safety."""

from __future__ import annotations

import numpy as np
import pytest

from engine.graph.ops.expression_eval import compile_expression
from engine.graph.ops.expressions import Binary, ExprError, Name, Num, Unary, parse, references
from engine.tensors import DataType
from tests.fakes import spec

SPECS = {
    "inputs.amount": spec("amount"),
    "x": spec("x", shape=(-1, 6)),
    "n": spec("n", "INT32"),
    "flag": spec("flag", "BOOL"),
    "user": spec("user", "BYTES", (-1,)),
    "v": spec("v", shape=(-1,)),
}


def _compile(text: str):
    return compile_expression(parse(text), SPECS)


def _error(text: str) -> ExprError:
    with pytest.raises(ExprError) as info:
        _compile(text)
    return info.value


def test_precedence_follows_python() -> None:
    tree = parse("1 + 2 * 3 ** 2")
    assert isinstance(tree, Binary) and tree.op == "+"
    assert isinstance(tree.right, Binary) and tree.right.op == "*"
    assert isinstance(tree.right.right, Binary) and tree.right.right.op == "**"
    neg = parse("-2 ** 2")  # -(2 ** 2), as in Python
    assert isinstance(neg, Unary) and isinstance(neg.operand, Binary)
    logic = parse("not a < 1 and b or c")
    assert isinstance(logic, Binary) and logic.op == "or"
    assert isinstance(logic.left, Binary) and logic.left.op == "and"
    assert isinstance(logic.left.left, Unary) and logic.left.left.op == "not"


def test_power_is_right_associative_and_constants_fold() -> None:
    tree = parse("2 ** 3 ** 2")
    assert isinstance(tree, Binary) and isinstance(tree.right, Binary)
    out = _compile("n * 0 + 2 ** 3 ** 2").fn([np.array([[1]], np.int32)])
    assert out.tolist() == [[512]]


def test_references_with_columns() -> None:
    names = references(parse("inputs.amount / 100 + x * 2"))
    assert [(n.text, n.col) for n in names] == [("inputs.amount", 1), ("x", 23)]
    assert parse("3.5") == Num(3.5, 1) and parse("ip.prob") == Name("ip.prob", 1)


def test_evaluation_matches_numpy() -> None:
    c = _compile("inputs.amount / 100 + x * 2")
    amount = np.array([[100.0], [300.0]], np.float32)
    x = np.ones((2, 6), np.float32)
    out = c.fn([amount, x])
    assert out.dtype == np.float32 and out.shape == (2, 6)
    np.testing.assert_allclose(out[:, 0], [3.0, 5.0])
    assert c.names == ("inputs.amount", "x") and c.shape == (-1, 6)


@pytest.mark.parametrize(
    ("text", "datatype"),
    [
        ("inputs.amount * 2.5", DataType.FP32),  # a Python float does not widen FP32
        ("n + 1", DataType.INT32),
        ("n / 2", DataType.FP64),
        ("n // 2", DataType.INT32),
        ("exp(inputs.amount)", DataType.FP32),
        ("sigmoid(inputs.amount)", DataType.FP32),
        ("inputs.amount > 3", DataType.BOOL),
        ("flag and not (n == 2)", DataType.BOOL),
        ("where(flag, inputs.amount, 0)", DataType.FP32),
        ("clip(n, 0, 10)", DataType.INT32),
        ("maximum(n, inputs.amount)", DataType.FP64),
    ],
)
def test_types_follow_numpy_2(text: str, datatype: DataType) -> None:
    assert _compile(text).datatype is datatype


# Each expression beside what numpy computes with the literal as a Python number.
_LITERALS = {
    "t + 3": lambda t: t + 3, "2.5 - t": lambda t: 2.5 - t, "t * 0.1": lambda t: t * 0.1,
    "t / 2": lambda t: t / 2, "7 / t": lambda t: 7 / t, "t // 3": lambda t: t // 3, "t % 4": lambda t: t % 4,
    "t ** 2": lambda t: t**2, "2 ** t": lambda t: 2**t, "t < 1.5": lambda t: t < 1.5,
    "t >= 2": lambda t: t >= 2, "t == 3": lambda t: t == 3, "-1 < t": lambda t: np.less(-1, t),
    "t > 255": lambda t: t > 255, "t != 1e10": lambda t: t != 1e10,
    "minimum(t, 2)": lambda t: np.minimum(t, 2), "maximum(0.5, t)": lambda t: np.maximum(0.5, t),
}  # fmt: skip


@pytest.mark.parametrize("datatype", ["FP32", "FP64", "FP16", "INT32", "INT64", "INT8", "UINT8", "UINT32"])
@pytest.mark.parametrize("template", sorted(_LITERALS))
def test_literals_give_what_numpy_gives_with_python_numbers(datatype: str, template: str) -> None:
    """A literal beside a tensor is converted once, when the expression compiles: every answer and
    dtype stays what numpy gives for the Python number, out-of-range integers in comparisons too."""
    try:
        c = compile_expression(parse(template), {"t": spec("t", datatype, (-1,))})
    except ExprError:  # numpy itself refuses it (e.g. an integer literal out of the tensor's range)
        return
    dtype = DataType(datatype).numpy_dtype
    signed = np.issubdtype(dtype, np.signedinteger) or dtype.kind == "f"
    t = (np.arange(-3, 9) if signed and "** t" not in template else np.arange(12)).astype(dtype)
    with np.errstate(all="ignore"):
        want = _LITERALS[template](t)
        got = c.fn([t])
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


def test_sigmoid_and_where_values() -> None:
    c = _compile("where(inputs.amount >= 0, sigmoid(inputs.amount), -1)")
    out = c.fn([np.array([[0.0], [-5.0]], np.float32)])
    np.testing.assert_allclose(out, [[0.5], [-1.0]])


@pytest.mark.parametrize(
    ("text", "col", "fragment"),
    [
        ("__import__('os')", 1, "unknown function '__import__'"),
        ("x.__class__.__bases__", 1, "is not a reference"),
        ("lambda: 1", 1, "'lambda' is not part of the expression language"),
        ("os.system(1)", 4, "'os.system' cannot be called"),
        ("x[0]", 2, "'[' is not supported"),
        ("'rm -rf", 1, "this text is never closed"),
        ("user in 'eu'", 9, "expected '[' after 'in'"),
        ("user in ['eu', 1]", 6, "mixes text and numbers"),
        ("user in [n]", 10, "holds numbers or quoted text only, found 'n'"),
        ("['eu'] == user", 1, "a list of values may only follow 'in' or 'not in'"),
        ("n +", 4, "expression ends too early"),
        ("(n + 1", 7, "expected ')' to close the '(' at column 1"),
        ("a < b < c", 7, "chained comparisons are not supported"),
        ("n = 1", 3, "compare with '=='"),
        ("expp(n)", 1, "did you mean 'exp'?"),
        ("clip(n, 1)", 1, "clip() takes 3 arguments, got 2"),
        ("n n", 3, "unexpected 'n' after a complete expression"),
        ("n & flag", 3, "use 'and', 'or', 'not'"),
    ],
)
def test_syntax_errors_have_columns(text: str, col: int, fragment: str) -> None:
    with pytest.raises(ExprError) as info:
        parse(text)
    assert fragment in info.value.message and info.value.col == col


@pytest.mark.parametrize(
    ("text", "col", "fragment"),
    [
        ("n and flag", 3, "'and' needs BOOL operands"),
        ("not n", 1, "'not' needs BOOL operands"),
        ("flag + 1", 6, "'+' needs numbers, got BOOL"),
        ("user == 1", 6, "cannot compare BYTES with the number 1"),
        ("user < 'm'", 6, "text has no order"),
        ("user + 1", 6, "'+' needs numbers, got BYTES"),
        ("inputs.amount == 'eu'", 15, "cannot compare the text 'eu' with FP32"),
        ("inputs.amount in ['eu']", 15, "'in' compares FP32 with quoted text"),
        ("user in [1, 2]", 6, "'in' compares BYTES with numbers"),
        ("'rm -rf'", 1, "reads no tensor"),
        ("n + 10000000000", 3, "out of bounds for int32"),
        ("inputs.amount + v", 15, "must have the same rank"),
        ("x + inputs.amount * 0 + where(n, 1, 0)", 25, "the condition of where() needs BOOL"),
        ("1 + 2", 1, "reads no tensor"),
    ],
)
def test_type_errors_have_columns(text: str, col: int, fragment: str) -> None:
    err = _error(text)
    assert fragment in err.message and err.col == col


def test_text_compares_with_bytes_tensors() -> None:
    users = np.array([b"eu", b"us", b"uk", b"it's", b""], dtype=object)
    cases = {
        "user == 'eu'": [True, False, False, False, False],
        "'eu' != user": [False, True, True, True, True],
        'user in ["eu", "uk"]': [True, False, True, False, False],
        "user not in ['eu', 'uk',]": [False, True, False, True, True],
        "user == 'it\\'s' or user == \"\"": [False, False, False, True, True],
        "user == user": [True] * 5,
    }
    for text, expected in cases.items():
        compiled = _compile(text)
        assert compiled.datatype is DataType.BOOL and compiled.shape == (-1,)
        assert compiled.fn([users] * len(compiled.names)).tolist() == expected, text


def test_in_with_numbers_and_folded_literals() -> None:
    compiled = _compile("n in [1, -2] and not (n not in [3])")
    assert compiled.fn([np.array([[1], [-2], [3]], np.int32)] * len(compiled.names)).tolist() == [
        [False], [False], [False]
    ]  # fmt: skip
    either = _compile("(n in [1, -2]) or ('a' in ['a', 'b'])")
    assert either.fn([np.array([[7]], np.int32)]).tolist() == [[True]]


def test_division_by_zero_does_not_warn_or_raise() -> None:
    c = _compile("inputs.amount / 0")
    with np.errstate(all="raise"):
        out = c.fn([np.ones((1, 1), np.float32)])
        assert np.geterr()["divide"] == "raise"  # the caller's error state is back afterwards
        with pytest.raises(FloatingPointError):
            np.ones(1) / 0
    assert np.isinf(out).all()


def test_nesting_is_bounded() -> None:
    with pytest.raises(ExprError, match="nested too deeply"):
        parse("(" * 200 + "n" + ")" * 200)
    with pytest.raises(ExprError, match="too long"):
        parse("n + " * 2000 + "n")
