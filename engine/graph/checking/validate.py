"""Semantic validation of a ``GraphSpec``: the whole graph, every problem at once.

In order: branch ownership (each switch/split target belongs to exactly one
route), dependencies and cycles, then every node in topological order
(references, model signatures, op and expression types), the graph outputs,
and finally reachability (every node feeds some output). The result is an
``Analysis``: each node's resolved slots, output specs and compiled functions,
which ``engine.graph.compiling.compiler`` numbers into a ``Plan``.
"""

from __future__ import annotations

import graphlib
from dataclasses import dataclass

from engine.graph.checking.feature_checks import check_features
from engine.graph.checking.logging_checks import check_logging_refs
from engine.graph.checking.model_files import ModelFiles
from engine.graph.checking.node_checks import check_model, check_op
from engine.graph.checking.route_checks import check_split, check_switch
from engine.graph.checking.scope import NodeResult, Scope
from engine.graph.checking.shadow_checks import check_shadow
from engine.graph.ops.expressions import ExprError, parse, references
from engine.graph.values.diagnostics import Pos, Report, did_you_mean
from engine.graph.values.spec import (
    FeatureNode,
    GraphSpec,
    ModelNode,
    NodeSpec,
    OpNode,
    ShadowNode,
    SplitNode,
    SwitchNode,
)
from engine.interfaces import FeatureCatalog
from engine.tensors import TensorSpec


@dataclass(frozen=True)
class Analysis:
    spec: GraphSpec
    inputs: tuple[TensorSpec, ...]
    order: tuple[str, ...]  # every checked node, dependencies first
    results: dict[str, NodeResult]
    owner: dict[str, str]  # branch target -> its switch/split
    outputs: tuple[tuple[TensorSpec, str], ...]  # (served spec, slot name)


def analyse(
    spec: GraphSpec, report: Report, files: ModelFiles, features: FeatureCatalog | None = None
) -> Analysis:
    inputs = {i.name: TensorSpec(i.name, i.datatype, i.shape) for i in spec.inputs}
    nodes = {n.common.name: n for n in spec.nodes}
    scope = Scope(spec, report, inputs, nodes, features=features)
    for i in spec.inputs:
        if i.name in nodes:
            report.warning(
                i.pos,
                f"input '{i.name}' has the same name as node '{i.name}': in expressions '{i.name}' means the "
                f"node; write inputs.{i.name} for the input",
            )
    _assign_owners(scope)
    for name, node in nodes.items():
        if node.common.optional and name in scope.owner:
            owner = scope.nodes[scope.owner[name]]
            scope.report.error(
                node.common.pos,
                f"node '{name}' runs for {owner.kind} '{owner.common.name}' only; it cannot be optional "
                f"(make '{owner.common.name}' optional instead)",
            )
    deps = {name: _dependencies(scope, node) for name, node in nodes.items()}
    order = _order(scope, deps)
    for name in order:
        result = _check(scope, nodes[name], files)
        if result is None:
            scope.failed.add(name)
        else:
            scope.results[name] = result
            if nodes[name].common.on_error != "fail":
                _check_recovery(scope, nodes[name], result)
    outputs: list[tuple[TensorSpec, str]] = []
    all_resolved = True
    for out in spec.outputs:
        resolved = scope.resolve(out.ref.text, out.ref.pos)
        if resolved is None:
            all_resolved = all_resolved and out.ref.source in scope.failed | spec.blocked
            continue
        outputs.append((TensorSpec(out.name, resolved[1].datatype, resolved[1].shape), resolved[0]))
    check_logging_refs(scope)
    if all_resolved and not report.has_errors:  # otherwise a broken reference would mislead it
        _report_unreachable(scope, deps)
        _report_unused_inputs(scope)
    return Analysis(spec, tuple(inputs.values()), tuple(order), scope.results, scope.owner, tuple(outputs))


def _check(scope: Scope, node: NodeSpec, files: ModelFiles) -> NodeResult | None:
    if isinstance(node, ModelNode):
        return check_model(scope, node, files)
    if isinstance(node, OpNode):
        return check_op(scope, node)
    if isinstance(node, SwitchNode):
        return check_switch(scope, node)
    if isinstance(node, FeatureNode):
        return check_features(scope, node)
    if isinstance(node, ShadowNode):
        return check_shadow(scope, node, files)
    return check_split(scope, node)


def _targets(node: NodeSpec) -> list[tuple[str, Pos]]:
    """Nodes owned by ``node``: a switch's or split's branches, and any node's fallback."""
    found: list[tuple[str, Pos]] = []
    if isinstance(node, SwitchNode):
        found = [(c.target, c.target_pos) for c in node.cases]
    elif isinstance(node, SplitNode):
        found = [(a.target, a.target_pos) for a in node.arms]
    if node.common.fallback is not None:
        found.append((node.common.fallback, node.common.on_error_pos or node.common.pos))
    return found


def _check_recovery(scope: Scope, node: NodeSpec, result: NodeResult) -> None:
    """A fallback must produce the same outputs; a default must fit every output."""
    common = node.common
    pos = common.on_error_pos or common.pos
    if isinstance(node, FeatureNode) and common.on_error == "default":
        return  # each field carries its own default, checked against its datatype when read
    if common.on_error == "fallback" and common.fallback in scope.results:
        theirs = {t.name: t for t in scope.results[common.fallback].outputs}
        for ours in result.outputs:
            other = theirs.get(ours.name)
            if other is None or other.datatype != ours.datatype or len(other.shape) != len(ours.shape):
                if other is not None:
                    got = f"it gives {other.datatype.value} {other.shape_text()}"
                else:
                    given = ", ".join(
                        f"{t.name} {t.datatype.value} {t.shape_text()}" for t in theirs.values()
                    )
                    got = f"it has no '{ours.name}' (its outputs: {given})"
                scope.report.error(
                    pos,
                    f"node '{common.name}': fallback '{common.fallback}' must produce '{ours.name}' as "
                    f"{ours.datatype.value} {ours.shape_text()}; {got}",
                )
    elif common.on_error == "default":
        for out in result.outputs:
            if any(d == -1 for d in out.shape[1:]):
                scope.report.error(
                    pos,
                    f"node '{common.name}': a default cannot fill output '{out.name}' {out.shape_text()}: "
                    "its size beyond the batch is not fixed (use a fallback node)",
                )
            elif out.datatype.value == "BYTES" or (
                out.datatype.value != "BOOL" and isinstance(common.default, bool)
            ):
                scope.report.error(
                    pos,
                    f"node '{common.name}': default {common.default!r} does not fit output '{out.name}' "
                    f"({out.datatype.value})",
                )
            elif (
                not out.datatype.is_float
                and isinstance(common.default, float)
                and not common.default.is_integer()
            ):
                scope.report.error(
                    pos,
                    f"node '{common.name}': default {common.default!r} is not a whole number, but output "
                    f"'{out.name}' is {out.datatype.value}",
                )


def _assign_owners(scope: Scope) -> None:
    for name, node in scope.nodes.items():
        seen: set[str] = set()
        for target, pos in _targets(node):
            if target == name:
                scope.report.error(pos, f"{node.kind} '{name}' cannot route to itself")
            elif target not in scope.nodes:
                if target not in scope.spec.blocked:
                    hint = did_you_mean(target, scope.nodes)
                    scope.report.error(pos, f"{node.kind} '{name}': unknown node '{target}'{hint}")
            elif target in seen:
                if isinstance(node, SplitNode):
                    scope.report.error(
                        pos, f"split '{name}' names '{target}' in two arms; merge their weights"
                    )
            elif scope.owner.get(target, name) != name:
                other = scope.owner[target]
                scope.report.error(
                    pos,
                    f"node '{target}' is already a branch of {scope.nodes[other].kind} '{other}'; "
                    "a node can be the branch of one switch or split only (give each its own node)",
                )
            else:
                scope.owner[target] = name
            seen.add(target)


def _report_unused_inputs(scope: Scope) -> None:
    """A graph input no node or output reads: every request would have to send it for nothing."""
    read: set[str] = set()
    texts = [o.ref.text for o in scope.spec.outputs]
    for node in scope.nodes.values():
        texts.extend(_references(node))
    for text in texts:
        head, _, tail = text.partition(".")
        if head == "inputs":
            read.add(tail)
        elif head not in scope.nodes:  # a bare name in an expression is a graph input
            read.add(head)
    for spec in scope.spec.inputs:
        if spec.name not in read:
            scope.report.error(
                spec.pos,
                f"graph input '{spec.name}' is not used by any node or output; remove it, or every request "
                "must send it for nothing",
            )


def _dependencies(scope: Scope, node: NodeSpec) -> set[str]:
    """Node names this node needs before it can run (branch targets count for routes)."""
    texts = _references(node)
    names = {t.split(".", 1)[0] for t in texts} | {t for t, _ in _targets(node) if t != node.common.name}
    return {n for n in names if n in scope.nodes}


def _references(node: NodeSpec) -> list[str]:
    """Every reference a node reads, as written (expressions' names included)."""
    texts: list[str] = []
    if isinstance(node, ModelNode):
        texts = [w.ref.text for w in node.inputs]
    elif isinstance(node, OpNode):
        texts = [r.text for r in node.inputs]
        if node.op == "expr":
            texts += _expression_names(str(node.params["expr"].value))
    elif isinstance(node, SwitchNode):
        texts = [n for c in node.cases if c.when is not None for n in _expression_names(c.when)]
    elif isinstance(node, ShadowNode):
        texts = [node.target]
    elif isinstance(node, FeatureNode) or node.key is not None:
        assert node.key is not None
        texts = [node.key.text]
    return texts


def _expression_names(text: str) -> list[str]:
    try:
        return [n.text for n in references(parse(text))]
    except ExprError:
        return []


def _order(scope: Scope, deps: dict[str, set[str]]) -> list[str]:
    """Nodes dependencies-first, in declaration order within a level; cycles are reported and dropped."""
    index = {name: i for i, name in enumerate(scope.nodes)}
    graph = {name: set(d) for name, d in deps.items()}
    while True:
        sorter = graphlib.TopologicalSorter(graph)
        try:
            sorter.prepare()
        except graphlib.CycleError as exc:
            cycle: list[str] = exc.args[1]
            first = min(cycle[:-1], key=index.__getitem__)
            start = cycle.index(first)
            ring = cycle[start:-1] + cycle[:start] + [first]
            scope.report.error(
                scope.nodes[first].common.pos,
                f"node '{first}' is part of a cycle: {' -> '.join(ring)} (each node feeds the next)",
            )
            for name in ring:
                scope.failed.add(name)
                graph.pop(name, None)
            for d in graph.values():
                d.difference_update(ring)
            continue
        order: list[str] = []
        while sorter.is_active():
            ready = sorted(sorter.get_ready(), key=index.__getitem__)
            order.extend(ready)
            sorter.done(*ready)
        return order


def _report_unreachable(scope: Scope, deps: dict[str, set[str]]) -> None:
    reached: set[str] = set()
    stack = [o.ref.source for o in scope.spec.outputs if o.ref.source in scope.nodes]
    while stack:
        name = stack.pop()
        if name not in reached:
            reached.add(name)
            stack.extend(deps.get(name, ()))
    for name, node in scope.nodes.items():
        if name not in reached and not isinstance(node, ShadowNode):
            scope.report.error(
                node.common.pos,
                f"node '{name}' is not used by any graph output; remove it or reference it from 'outputs'",
            )
