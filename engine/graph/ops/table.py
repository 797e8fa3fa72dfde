"""The registry of built-in ops, and the one entry point that checks and builds a call.

``TRANSFORMS`` and ``COMBINES`` map an op name to its ``OpDef``: the keys it
accepts besides ``inputs`` (the reader rejects others, with a suggestion), how
many inputs it takes, and the builder that infers its output spec and compiles
its numpy function.
"""

from __future__ import annotations

from engine.graph.ops import combines, transforms
from engine.graph.ops.call import OpBuilder, OpCall, OpDef, OpOutput


def _op(
    kind: str, name: str, params: str, lo: int, hi: int | None, build: OpBuilder | None, summary: str
) -> OpDef:
    return OpDef(name, kind, frozenset(params.split()), lo, hi, build, summary)


TRANSFORMS: dict[str, OpDef] = {
    d.name: d
    for d in (
        _op("transform", "concat", "axis", 1, None, transforms.concat, "join inputs along an axis"),
        _op(
            "transform", "slice", "axis start stop", 1, 1, transforms.slice_, "python-style slice of one axis"
        ),
        _op("transform", "cast", "to", 1, 1, transforms.cast, "convert to another datatype"),
        _op(
            "transform", "reshape", "shape", 1, 1, transforms.reshape, "new per-row shape, batch stays first"
        ),
        _op("transform", "argmax", "axis", 1, 1, transforms.argmax, "index of the largest value (INT64)"),
        _op("transform", "threshold", "value", 1, 1, transforms.threshold, "x >= value (BOOL)"),
        _op("transform", "identity", "", 1, 1, transforms.identity, "pass the input through"),
        _op("transform", "expr", "expr", 0, 0, None, "elementwise arithmetic expression"),
    )
}

COMBINES: dict[str, OpDef] = {
    d.name: d
    for d in (
        _op("combine", "mean", "", 2, None, combines.mean, "elementwise average"),
        _op("combine", "weighted_mean", "weights", 2, None, combines.weighted_mean, "weighted average"),
        _op("combine", "max", "", 2, None, combines.max_, "elementwise maximum"),
        _op("combine", "min", "", 2, None, combines.min_, "elementwise minimum"),
        _op("combine", "sum", "", 2, None, combines.sum_, "elementwise sum"),
        _op("combine", "vote", "", 2, None, combines.vote, "majority per element, ties to the smallest"),
        _op("combine", "concat", "axis", 2, None, combines.combine_concat, "join inputs along an axis"),
    )
}


def op_table(kind: str) -> dict[str, OpDef]:
    return TRANSFORMS if kind == "transform" else COMBINES


def build_op(call: OpCall) -> OpOutput | None:
    """Check the input count, then let the op check and compile itself."""
    definition = op_table(call.kind)[call.op]
    n = len(call.inputs)
    if n < definition.min_inputs or (definition.max_inputs is not None and n > definition.max_inputs):
        if definition.max_inputs == definition.min_inputs:
            want = (
                "exactly one input"
                if definition.min_inputs == 1
                else f"exactly {definition.min_inputs} inputs"
            )
        else:
            want = f"at least {definition.min_inputs} input" + ("s" if definition.min_inputs > 1 else "")
        call.fail(f"needs {want}, got {n}")
        return None
    assert definition.build is not None
    return definition.build(call)
