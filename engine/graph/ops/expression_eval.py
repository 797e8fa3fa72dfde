"""Type-check an expression tree and compile it, once, into a closure tree over numpy.

Datatypes are inferred by applying each numpy operation to one-element sample
arrays of the operand datatypes, so inference is exactly what will happen per
request (numpy 2 / NEP 50 rules: a Python number literal never widens an
array: ``FP32 * 2.5`` is FP32, ``INT32 + 1`` is INT32, ``INT32 / 2`` is FP64).
Literal-only subexpressions are folded at compile time. Shapes: every tensor
operand must have the same rank; dimensions agree when equal, when one is 1
(broadcast) or when one is -1 (any size).

Text: a BYTES tensor (an input, a feature, a node output) compares with quoted text or
another BYTES tensor by ``==`` and ``!=``, and with a list of quoted text by ``in`` /
``not in``; a literal is its UTF-8 bytes, compared byte for byte (no case folding, no
trimming). Text takes no part in arithmetic, ordering or functions.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.graph.ops.expressions import Binary, Call, Expr, ExprError, Member, Name, Num, Text, Unary
from engine.tensors import DataType, TensorSpec

Evaluator = Callable[[Sequence[np.ndarray]], Any]

try:  # numpy's floating-point error state is a context variable; set it directly, not through errstate
    _umath: Any = importlib.import_module("numpy._core._multiarray_umath")
    _extobj_contextvar: Any = _umath._extobj_contextvar
    _QUIET: Any = _umath._make_extobj(all="ignore")
except (ImportError, AttributeError, TypeError):  # another numpy: errstate (the same, ~1 µs slower)
    _QUIET = None


def _sigmoid(x: Any) -> Any:
    return np.tanh(np.multiply(x, 0.5)) * 0.5 + 0.5  # stable, keeps FP32 as FP32


_ARITHMETIC: dict[str, Callable[..., Any]] = {
    "+": np.add, "-": np.subtract, "*": np.multiply, "/": np.true_divide,
    "//": np.floor_divide, "%": np.remainder, "**": np.power,
}  # fmt: skip
_COMPARE: dict[str, Callable[..., Any]] = {
    "<": np.less, "<=": np.less_equal, ">": np.greater, ">=": np.greater_equal,
    "==": np.equal, "!=": np.not_equal,
}  # fmt: skip
_LOGIC: dict[str, Callable[..., Any]] = {"and": np.logical_and, "or": np.logical_or}
_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "abs": np.abs, "exp": np.exp, "log": np.log, "log1p": np.log1p, "sqrt": np.sqrt,
    "sigmoid": _sigmoid, "tanh": np.tanh, "floor": np.floor, "ceil": np.ceil, "round": np.round,
    "minimum": np.minimum, "maximum": np.maximum, "clip": np.clip, "where": np.where,
}  # fmt: skip


@dataclass(frozen=True)
class CompiledExpr:
    """An expression ready to run: ``fn(arrays)`` with arrays in ``names`` order."""

    datatype: DataType
    shape: tuple[int, ...]
    names: tuple[str, ...]
    fn: Callable[[Sequence[np.ndarray]], np.ndarray]


@dataclass(frozen=True)
class _Part:
    sample: Any  # a one-element array of the result dtype, or a Python literal
    shape: tuple[int, ...] | None  # None: a literal
    run: Evaluator | None  # None: constant ``sample``

    def describe(self) -> str:
        if self.shape is None:
            if isinstance(self.sample, bytes):
                return f"the text {self.sample.decode()!r}"
            return f"the number {self.sample!r}" if not isinstance(self.sample, bool) else "a BOOL constant"
        return DataType.from_numpy(self.sample.dtype).value

    def is_text(self) -> bool:
        if self.shape is None:
            return isinstance(self.sample, bytes)
        return bool(self.sample.dtype == object)

    def is_bool(self) -> bool:
        if self.shape is None:
            return isinstance(self.sample, bool)
        return bool(self.sample.dtype == np.bool_)


def compile_expression(tree: Expr, specs: Mapping[str, TensorSpec]) -> CompiledExpr:
    """Check and compile ``tree``; ``specs`` gives each referenced name's spec. Raises ExprError."""
    names = tuple(dict.fromkeys(_names(tree)))
    index = {name: i for i, name in enumerate(names)}
    part = _Compiler(specs, index).part(tree)
    if part.shape is None or part.run is None:
        raise ExprError("expression reads no tensor, so it has no rows; reference an input or a node", 1)
    root = part.run

    if _QUIET is None:

        def fn(arrays: Sequence[np.ndarray]) -> np.ndarray:
            with np.errstate(all="ignore"):
                return np.asarray(root(arrays))

    else:

        def fn(arrays: Sequence[np.ndarray]) -> np.ndarray:
            # what ``np.errstate(all="ignore")`` does, with a state made once
            token = _extobj_contextvar.set(_QUIET)
            try:
                return np.asarray(root(arrays))
            finally:
                _extobj_contextvar.reset(token)

    return CompiledExpr(DataType.from_numpy(part.sample.dtype), part.shape, names, fn)


def _names(tree: Expr) -> list[str]:
    if isinstance(tree, Name):
        return [tree.text]
    if isinstance(tree, Unary):
        return _names(tree.operand)
    if isinstance(tree, Binary):
        return _names(tree.left) + _names(tree.right)
    if isinstance(tree, Call):
        return [n for a in tree.args for n in _names(a)]
    if isinstance(tree, Member):
        return _names(tree.operand)
    return []


def broadcast(left: tuple[int, ...], right: tuple[int, ...], col: int) -> tuple[int, ...]:
    if len(left) != len(right):
        raise ExprError(
            f"cannot combine shapes {list(left)} and {list(right)}: tensors in one expression must have "
            "the same rank (rows would broadcast against columns); reshape one of them first",
            col,
        )
    out = []
    for i, (a, b) in enumerate(zip(left, right, strict=True)):
        if a == b or b == 1:
            out.append(a)
        elif a == 1:
            out.append(b)
        elif a == -1 or b == -1:
            out.append(max(a, b))
        else:
            raise ExprError(f"shapes {list(left)} and {list(right)} do not agree in dimension {i}", col)
    return tuple(out)


class _Compiler:
    def __init__(self, specs: Mapping[str, TensorSpec], index: Mapping[str, int]) -> None:
        self.specs = specs
        self.index = index

    def part(self, tree: Expr) -> _Part:
        if isinstance(tree, Num):
            return _Part(tree.value, None, None)
        if isinstance(tree, Text):
            return _Part(tree.value.encode(), None, None)
        if isinstance(tree, Member):
            return self.member(tree)
        if isinstance(tree, Name):
            return self.name(tree)
        if isinstance(tree, Unary):
            operand = self.part(tree.operand)
            if tree.op == "not":
                self.need_bool(operand, "'not'", tree.col)
                return self.apply(np.logical_not, [operand], tree.col, "'not'")
            self.need_number(operand, f"unary '{tree.op}'", tree.col)
            return self.apply(np.negative if tree.op == "-" else np.positive, [operand], tree.col, tree.op)
        if isinstance(tree, Binary):
            return self.binary(tree)
        return self.call(tree)

    def name(self, tree: Name) -> _Part:
        spec = self.specs[tree.text]
        i = self.index[tree.text]
        sample = np.zeros(1, dtype=spec.datatype.numpy_dtype)
        return _Part(sample, spec.shape, lambda arrays: arrays[i])

    def binary(self, tree: Binary) -> _Part:
        left, right = self.part(tree.left), self.part(tree.right)
        if tree.op in _LOGIC:
            for side in (left, right):
                self.need_bool(side, f"'{tree.op}'", tree.col)
            return self.apply(_LOGIC[tree.op], [left, right], tree.col, f"'{tree.op}'")
        if tree.op in _COMPARE:
            if left.is_text() or right.is_text():
                self.text_comparison(tree.op, left, right, tree.col)
            return self.apply(_COMPARE[tree.op], [left, right], tree.col, f"'{tree.op}'")
        for side in (left, right):
            self.need_number(side, f"'{tree.op}'", tree.col)
        return self.apply(_ARITHMETIC[tree.op], [left, right], tree.col, f"'{tree.op}'")

    def text_comparison(self, op: str, left: _Part, right: _Part, col: int) -> None:
        if op not in ("==", "!="):
            raise ExprError(f"text has no order: compare it with '==', '!=' or 'in [...]', not '{op}'", col)
        if not (left.is_text() and right.is_text()):
            text, other = (left, right) if left.is_text() else (right, left)
            raise ExprError(f"cannot compare {text.describe()} with {other.describe()}", col)

    def member(self, tree: Member) -> _Part:
        operand = self.part(tree.operand)
        word = "not in" if tree.negated else "in"
        text_list = isinstance(tree.values[0], str)
        if text_list != operand.is_text():
            listed = "quoted text" if text_list else "numbers"
            raise ExprError(f"'{word}' compares {operand.describe()} with {listed}; use one kind", tree.col)
        if not text_list:
            self.need_number(operand, f"'{word}'", tree.col)
        if operand.shape is None or operand.run is None:  # a literal: fold now
            value = operand.sample
            hit = value in (
                tuple(v.encode() for v in tree.values if isinstance(v, str)) if text_list else tree.values
            )
            return _Part(bool(hit) != tree.negated, None, None)
        run = operand.run
        negated = tree.negated
        if text_list:
            members = frozenset(v.encode() for v in tree.values if isinstance(v, str))

            def text_in(arrays: Sequence[np.ndarray]) -> np.ndarray:
                values = run(arrays)
                found = np.fromiter([e in members for e in values.reshape(-1)], np.bool_, values.size)
                return (~found if negated else found).reshape(values.shape)

            return _Part(np.zeros(1, np.bool_), operand.shape, text_in)
        numbers: np.ndarray = np.asarray(tree.values)

        def number_in(arrays: Sequence[np.ndarray]) -> np.ndarray:
            return np.isin(run(arrays), numbers, invert=negated)

        return _Part(np.zeros(1, np.bool_), operand.shape, number_in)

    def call(self, tree: Call) -> _Part:
        args = [self.part(a) for a in tree.args]
        what = f"{tree.func}()"
        if tree.func == "where":
            self.need_bool(args[0], f"the condition of {what}", tree.col)
            for arg in args[1:]:
                self.need_number(arg, what, tree.col)
        else:
            for arg in args:
                self.need_number(arg, what, tree.col)
        return self.apply(_FUNCTIONS[tree.func], args, tree.col, what)

    def need_bool(self, part: _Part, what: str, col: int) -> None:
        if not part.is_bool():
            raise ExprError(f"{what} needs BOOL operands (comparisons give BOOL), got {part.describe()}", col)

    def need_number(self, part: _Part, what: str, col: int) -> None:
        if part.is_text():
            raise ExprError(
                f"{what} needs numbers, got {part.describe()} (text only compares with ==, != and in [...])",
                col,
            )
        if part.is_bool():
            raise ExprError(
                f"{what} needs numbers, got BOOL (use where(cond, 1, 0) to turn it into one)", col
            )

    def apply(self, func: Callable[..., Any], parts: list[_Part], col: int, what: str) -> _Part:
        try:
            with np.errstate(all="ignore"):
                sample = func(*[p.sample for p in parts])
        except (ArithmeticError, TypeError, ValueError) as exc:
            operands = " and ".join(p.describe() for p in parts)
            raise ExprError(f"cannot apply {what} to {operands}: {exc}", col) from None
        shapes = [p.shape for p in parts if p.shape is not None]
        if not shapes:  # every operand is a literal: fold now
            value = sample.item() if isinstance(sample, np.generic | np.ndarray) else sample
            return _Part(value, None, None)
        shape = shapes[0]
        for other in shapes[1:]:
            shape = broadcast(shape, other, col)
        return _Part(np.asarray(sample), shape, _closure(func, parts))


def _typed(literal: Any, other: Any) -> Any:
    """A number literal beside an array operand of a ufunc, as a 0-d array of the dtype numpy would
    convert it to (the pair's result type, literals being weak): the same answer, without the
    conversion on every call. Left as it is when numpy would not convert it (an integer out of the
    array's range, which comparisons allow) and for anything but a plain number."""
    if not isinstance(literal, int | float) or not isinstance(other, np.ndarray):
        return literal
    try:
        with np.errstate(all="ignore"):  # 1e10 beside FP16 is inf, as numpy makes it on every call
            return np.asarray(literal, dtype=np.result_type(other, literal))
    except (OverflowError, TypeError, ValueError):
        return literal


def _constant(value: Any) -> Evaluator:
    return lambda _arrays: value


def _closure(func: Callable[..., Any], parts: list[_Part]) -> Evaluator:
    """The evaluator of ``func`` over ``parts``: constants bound now, one call per request."""
    runs = [p.run for p in parts]
    consts = [p.sample for p in parts]
    if len(parts) == 1:
        (only,) = runs
        assert only is not None
        return lambda arrays: func(only(arrays))
    if len(parts) == 2:
        a, b = runs
        ca, cb = consts
        if isinstance(func, np.ufunc):  # a literal beside an array: converted once, here
            if a is None:
                ca = _typed(ca, cb)
            if b is None:
                cb = _typed(cb, ca)
        if a is None:
            assert b is not None
            return lambda arrays: func(ca, b(arrays))
        assert a is not None
        if b is None:
            return lambda arrays: func(a(arrays), cb)
        return lambda arrays: func(a(arrays), b(arrays))
    getters: list[Evaluator] = [
        r if r is not None else _constant(c) for r, c in zip(runs, consts, strict=True)
    ]
    return lambda arrays: func(*[g(arrays) for g in getters])
