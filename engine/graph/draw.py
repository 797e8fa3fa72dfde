"""Drawings of a compiled graph: Mermaid (``to_mermaid``) and Graphviz DOT (``to_dot``).

Both draw the same picture from ``Plan.nodes``: graph inputs, each node
labelled with its kind and detail, edges labelled with the tensor they carry,
switch/split edges labelled with their condition or weight, and the served
outputs. Route conditions come from the route's ``NodeInfo.detail``, whose
parts are ``"<condition> -> <target>"`` separated by ``"; "``.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.graph.values.plan import NodeInfo, Plan
from engine.tensors import TensorSpec


@dataclass(frozen=True)
class _Edge:
    source: str
    target: str
    label: str
    dashed: bool = False


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c == "_" else "_" for c in name)


def _node_id(name: str) -> str:
    return "n_" + _safe(name)


def _input_id(name: str) -> str:
    return "in_" + _safe(name)


def _output_id(name: str) -> str:
    return "out_" + _safe(name)


def _tensor_label(spec: TensorSpec) -> str:
    return f"{spec.name}\n{spec.datatype.value} {spec.shape_text()}"


def _source_id(reference: str) -> str:
    head, _, tail = reference.partition(".")
    return _input_id(tail) if head == "inputs" else _node_id(head)


def _edges(plan: Plan) -> list[_Edge]:
    edges: list[_Edge] = []
    for node in plan.nodes:
        for ref in node.inputs:  # a shadow's are dashed: the same arrays its target gets, off the path
            edges.append(
                _Edge(
                    _source_id(ref), _node_id(node.name), ref.partition(".")[2], dashed=node.kind == "shadow"
                )
            )
        if node.branches:
            labels = _route_labels(node)
            for target in node.branches:
                edges.append(
                    _Edge(_node_id(node.name), _node_id(target), labels.get(target, ""), dashed=True)
                )
                for out in node.outputs:
                    edges.append(_Edge(_node_id(target), _node_id(node.name), out.name))
    for spec, slot in zip(plan.outputs, plan.output_slots, strict=True):
        edges.append(_Edge(_source_id(plan.slot_names[slot]), _output_id(spec.name), plan.slot_names[slot]))
    return edges


def _route_labels(node: NodeInfo) -> dict[str, str]:
    labels: dict[str, list[str]] = {}
    for part in node.detail.split("; "):
        condition, arrow, target = part.rpartition(" -> ")
        if arrow:
            labels.setdefault(target, []).append(condition.removeprefix("when "))
    return {target: " or ".join(conditions) for target, conditions in labels.items()}


def _node_label(node: NodeInfo) -> str:
    if node.kind in ("switch", "split"):
        key = next((p for p in node.detail.split("; ") if p.startswith("key ")), "")
        return f"{node.name}\n{node.kind}" + (f" ({key})" if key else "")
    return f"{node.name}\n{node.kind}: {node.detail}"


def _mermaid_text(text: str) -> str:
    return '"' + text.replace('"', "#quot;").replace("\n", "<br/>") + '"'


def to_mermaid(plan: Plan) -> str:
    """A Mermaid flowchart (left to right) of ``plan``."""
    lines = ["flowchart LR"]
    for spec in plan.inputs:
        lines.append(f"  {_input_id(spec.name)}([{_mermaid_text(_tensor_label(spec))}])")
    for node in plan.nodes:
        shape = ("{", "}") if node.kind in ("switch", "split") else ("[", "]")
        lines.append(f"  {_node_id(node.name)}{shape[0]}{_mermaid_text(_node_label(node))}{shape[1]}")
    for spec in plan.outputs:
        lines.append(f"  {_output_id(spec.name)}([{_mermaid_text(_tensor_label(spec))}])")
    for edge in _edges(plan):
        arrow = "-.->" if edge.dashed else "-->"
        label = f"|{_mermaid_text(edge.label)}|" if edge.label else ""
        lines.append(f"  {edge.source} {arrow}{label} {edge.target}")
    return "\n".join(lines) + "\n"


def _dot_text(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def to_dot(plan: Plan) -> str:
    """A Graphviz digraph (left to right) of ``plan``."""
    lines = [f"digraph {_dot_text(plan.graph)} {{", "  rankdir=LR;", "  node [fontname=Helvetica];"]
    for spec in plan.inputs:
        lines.append(f"  {_input_id(spec.name)} [shape=ellipse, label={_dot_text(_tensor_label(spec))}];")
    for node in plan.nodes:
        shape = "diamond" if node.kind in ("switch", "split") else "box"
        lines.append(f"  {_node_id(node.name)} [shape={shape}, label={_dot_text(_node_label(node))}];")
    for spec in plan.outputs:
        lines.append(
            f"  {_output_id(spec.name)} [shape=ellipse, style=bold, label={_dot_text(_tensor_label(spec))}];"
        )
    for edge in _edges(plan):
        style = ", style=dashed" if edge.dashed else ""
        lines.append(f"  {edge.source} -> {edge.target} [label={_dot_text(edge.label)}{style}];")
    lines.append("}")
    return "\n".join(lines) + "\n"
