"""What a built-in op sees when it is checked and compiled: one ``OpCall``.

An op builder reads its arguments through the typed ``OpCall`` accessors
(which report a diagnostic at the argument's position when a value is wrong),
checks its input ``TensorSpec``s, and returns an ``OpOutput``: the output
datatype and shape plus the numpy function the executor will call per request.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from engine.graph.values.diagnostics import Pos, Report, did_you_mean
from engine.graph.values.plan import RowFunction
from engine.graph.values.spec import Param
from engine.tensors import DataType, TensorSpec


@dataclass(frozen=True, slots=True)
class OpOutput:
    datatype: DataType
    shape: tuple[int, ...]
    fn: RowFunction


@dataclass(frozen=True)
class OpCall:
    node: str
    kind: str  # "transform" | "combine"
    op: str
    inputs: tuple[TensorSpec, ...]
    input_pos: tuple[Pos, ...]
    params: Mapping[str, Param]
    pos: Pos  # the op name's position
    report: Report

    def fail(self, message: str, pos: Pos | None = None) -> None:
        self.report.error(pos or self.pos, f"node '{self.node}': {self.kind} '{self.op}': {message}")

    def fail_param(self, name: str, message: str) -> None:
        self.fail(f"'{name}' {message}", self.params[name].pos)

    def has(self, name: str) -> bool:
        return name in self.params

    def int_param(self, name: str, default: int | None = None) -> int | None:
        param = self.params.get(name)
        if param is None or param.value is None:
            return default
        if isinstance(param.value, bool) or not isinstance(param.value, int):
            self.fail_param(name, f"must be a whole number, got {_show(param.value)}")
            return None
        return param.value

    def number_param(self, name: str) -> float | None:
        param = self.params.get(name)
        if param is None:
            self.fail(f"needs '{name}'")
            return None
        if isinstance(param.value, bool) or not isinstance(param.value, int | float):
            self.fail_param(name, f"must be a number, got {_show(param.value)}")
            return None
        return param.value

    def datatype_param(self, name: str) -> DataType | None:
        param = self.params.get(name)
        if param is None:
            self.fail(f"needs '{name}' (a datatype such as FP32)")
            return None
        if not isinstance(param.value, str):
            self.fail_param(name, f"must be a datatype name, got {_show(param.value)}")
            return None
        try:
            return DataType.parse(param.value)
        except ValueError:
            hint = did_you_mean(param.value.upper(), [d.value for d in DataType])
            self.fail_param(name, f"unknown datatype '{param.value}'{hint}")
            return None

    def axis(self, rank: int, *, name: str = "axis") -> int | None:
        """The ``axis`` argument normalised to [1, rank); axis 0 (the batch) is refused."""
        axis = self.int_param(name, -1)
        if axis is None:
            return None
        pos = self.params[name].pos if name in self.params else self.pos
        if not -rank <= axis < rank:
            self.fail(f"axis {axis} is out of range for rank {rank}", pos)
            return None
        axis %= rank
        if axis == 0:
            self.fail(
                f"axis {axis if name not in self.params else self.params[name].value} is the batch "
                f"dimension (input rank {rank}); use an axis of 1 or more, or reshape to [-1, 1] first",
                pos,
            )
            return None
        return axis

    def same_datatype(
        self, allowed: Callable[[DataType], bool] | None = None, what: str = ""
    ) -> DataType | None:
        first = self.inputs[0].datatype
        for spec, pos in zip(self.inputs, self.input_pos, strict=True):
            if spec.datatype is not first:
                self.fail(
                    f"all inputs must have the same datatype: '{self.inputs[0].name}' is {first.value} "
                    f"but '{spec.name}' is {spec.datatype.value} (add a cast transform)",
                    pos,
                )
                return None
        if allowed is not None and not allowed(first):
            self.fail(f"needs {what} inputs, got {first.value}", self.input_pos[0])
            return None
        return first


def _show(value: object) -> str:
    if isinstance(value, str):
        return f"'{value}'"
    if value is None:
        return "nothing"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return repr(value)


def unify_dims(a: int, b: int) -> int | None:
    """The dimension both ``a`` and ``b`` can be (-1 is any size), or None if none."""
    if a == -1:
        return b
    if b == -1 or a == b:
        return a
    return None


def unify_shapes(call: OpCall, specs: Sequence[TensorSpec], skip_axis: int | None = None) -> list[int] | None:
    """Shapes that must agree (except ``skip_axis``): the agreed shape, or a diagnostic."""
    first = specs[0]
    shape = list(first.shape)
    for spec, pos in zip(specs[1:], call.input_pos[1:], strict=True):
        if len(spec.shape) != len(shape):
            call.fail(
                f"inputs must have the same rank: '{first.name}' is {first.shape_text()} "
                f"but '{spec.name}' is {spec.shape_text()}",
                pos,
            )
            return None
        for i, dim in enumerate(spec.shape):
            if i == skip_axis:
                continue
            merged = unify_dims(shape[i], dim)
            if merged is None:
                call.fail(
                    f"shapes do not agree in dimension {i}: '{first.name}' is {first.shape_text()} "
                    f"but '{spec.name}' is {spec.shape_text()}",
                    pos,
                )
                return None
            shape[i] = merged
    return shape


OpBuilder = Callable[[OpCall], OpOutput | None]


@dataclass(frozen=True)
class OpDef:
    """A built-in op: its argument keys, how many inputs it takes, and its builder."""

    name: str
    kind: str
    params: frozenset[str]
    min_inputs: int
    max_inputs: int | None
    build: OpBuilder | None  # None: built elsewhere (``expr``)
    summary: str
