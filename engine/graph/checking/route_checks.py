"""Check switch and split nodes: conditions, keys, and that all branches agree.

Every branch target must produce the same output names with the same
datatypes and ranks; the route's outputs take the first branch's order, with a
dimension kept where all branches agree and -1 where they differ.
"""

from __future__ import annotations

from engine.graph.checking.node_checks import compile_text
from engine.graph.checking.scope import NodeResult, Scope
from engine.graph.ops.routers import random_split_router, sticky_split_router, switch_router
from engine.graph.values.diagnostics import Pos
from engine.graph.values.spec import SplitNode, SwitchNode
from engine.tensors import DataType, TensorSpec


def _per_row(shape: tuple[int, ...]) -> bool:
    return len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)


def _branch_outputs(
    scope: Scope, route: str, kind: str, targets: list[tuple[str, Pos]]
) -> tuple[TensorSpec, ...] | None:
    if any(name not in scope.results for name, _ in targets):
        return None  # an unknown or failed target: reported where it is
    first_name = targets[0][0]
    merged = list(scope.results[first_name].outputs)

    def listing(specs: tuple[TensorSpec, ...] | list[TensorSpec]) -> str:
        return ", ".join(f"{t.name} {t.datatype.value} {t.shape_text()}" for t in specs)

    ok = True
    for name, pos in targets[1:]:
        theirs = scope.results[name].outputs
        if [t.name for t in theirs] != [t.name for t in merged] and {t.name for t in theirs} != {
            t.name for t in merged
        }:
            scope.report.error(
                pos,
                f"{kind} '{route}': branch '{name}' outputs ({listing(theirs)}) differ from branch "
                f"'{first_name}' ({listing(scope.results[first_name].outputs)}); every branch must produce "
                "the same outputs",
            )
            ok = False
            continue
        by_name = {t.name: t for t in theirs}
        for i, mine in enumerate(merged):
            other = by_name[mine.name]
            if other.datatype is not mine.datatype or len(other.shape) != len(mine.shape):
                scope.report.error(
                    pos,
                    f"{kind} '{route}': output '{mine.name}' of branch '{name}' is {other.datatype.value} "
                    f"{other.shape_text()} but branch '{first_name}' gives {mine.datatype.value} "
                    f"{mine.shape_text()}; every branch must produce the same datatypes and ranks",
                )
                ok = False
                continue
            shape = tuple(a if a == b else -1 for a, b in zip(mine.shape, other.shape, strict=True))
            merged[i] = TensorSpec(mine.name, mine.datatype, shape)
    return tuple(merged) if ok else None


def check_switch(scope: Scope, node: SwitchNode) -> NodeResult | None:
    name = node.common.name
    targets = list(dict.fromkeys(c.target for c in node.cases))
    branch_of = {t: i for i, t in enumerate(targets)}
    reads: list[str] = []
    conditions = []
    ok = True
    for case in node.cases:
        if case.when is None:
            continue
        compiled = compile_text(scope, case.when, case.when_pos, f"switch '{name}'")
        if compiled is None:
            ok = False
            continue
        expr, slots = compiled
        if expr.datatype is not DataType.BOOL:
            scope.report.error(
                case.when_pos,
                f"switch '{name}': condition gives {expr.datatype.value}, it must give BOOL "
                "(a comparison such as inputs.amount > 1000)",
            )
            ok = False
            continue
        if not _per_row(expr.shape):
            scope.report.error(
                case.when_pos,
                f"switch '{name}': condition has shape {list(expr.shape)}; it must give one BOOL per row "
                "(shape [-1] or [-1, 1])",
            )
            ok = False
            continue
        picks = []
        for slot in slots:
            if slot not in reads:
                reads.append(slot)
            picks.append(reads.index(slot))
        conditions.append((expr.fn, tuple(picks), branch_of[case.target]))
    outputs = _branch_outputs(scope, name, "switch", [(c.target, c.target_pos) for c in node.cases])
    default = next((c.target for c in node.cases if c.when is None), None)
    if not ok or outputs is None or default is None:  # a missing default was reported when read
        return None
    detail = "; ".join(
        f"when {c.when} -> {c.target}" if c.when is not None else f"default -> {c.target}" for c in node.cases
    )
    return NodeResult(
        node=node,
        reads=tuple(reads),
        outputs=outputs,
        detail=detail,
        router=switch_router(conditions, branch_of[default]),
        targets=tuple(targets),
        shown_inputs=tuple(reads),
    )


def check_split(scope: Scope, node: SplitNode) -> NodeResult | None:
    name = node.common.name
    reads: tuple[str, ...] = ()
    ok = True
    if node.key is not None:
        resolved = scope.resolve(node.key.text, node.key.pos)
        if resolved is None:
            ok = False
        elif not _per_row(resolved[1].shape):
            scope.report.error(
                node.key.pos,
                f"split '{name}': key '{node.key.text}' has shape {resolved[1].shape_text()}; "
                "it must hold one value per row (shape [-1] or [-1, 1])",
            )
            ok = False
        else:
            reads = (resolved[0],)
    outputs = _branch_outputs(scope, name, "split", [(a.target, a.target_pos) for a in node.arms])
    if not ok or outputs is None:
        return None
    weights = [a.weight for a in node.arms]
    total = sum(weights)
    if total <= 0:  # all zero: reported where the arms are read
        return None
    parts = [f"{a.weight / total * 100:.4g}% -> {a.target}" for a in node.arms]
    if node.key is not None:
        parts.append(f"key {node.key.text}")
    router = sticky_split_router(weights, name) if node.key is not None else random_split_router(weights)
    return NodeResult(
        node=node,
        reads=reads,
        outputs=outputs,
        detail="; ".join(parts),
        router=router,
        targets=tuple(a.target for a in node.arms),
        shown_inputs=reads,
    )
