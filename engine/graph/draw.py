"""Drawings of a compiled graph: Mermaid (``to_mermaid``), Graphviz DOT (``to_dot``) and a
self-contained SVG (``to_svg``, laid out here: no graphviz needed).

All draw the same picture from ``Plan.nodes``: graph inputs, each node labelled with its
kind and detail and its marks (timeout, ``on_error``, optional, batching, shadows), edges
labelled with the tensor they carry, switch/split edges labelled with their condition or
weight, a dashed ``fallback`` edge from a fallback to the node it backs up, a dotted
``compared`` edge from a shadowed node to its shadow, and the served outputs. Route
conditions come from the route's ``NodeInfo.detail``, whose parts are
``"<condition> -> <target>"`` separated by ``"; "``.
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
        if node.fallback is not None:  # runs only when this node fails: its answer replaces this one's
            edges.append(
                _Edge(_node_id(node.fallback), _node_id(node.name), "fallback on error", dashed=True)
            )
        for shadow in node.shadows:  # the shadow gets this node's inputs; its outputs are compared
            edges.append(_Edge(_node_id(node.name), _node_id(shadow), "compared", dashed=True))
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
        label = f"{node.name}\n{node.kind}" + (f" ({key})" if key else "")
    else:
        label = f"{node.name}\n{node.kind}: {node.detail}"
    return label + "".join(f"\n[{mark}]" for mark in node.marks)


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
        if node.kind == "shadow" or "optional" in node.marks:
            lines.append(f"  style {_node_id(node.name)} stroke-dasharray: 5 5")
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
        style = ", style=dashed" if node.kind == "shadow" or "optional" in node.marks else ""
        lines.append(f"  {_node_id(node.name)} [shape={shape}, label={_dot_text(_node_label(node))}{style}];")
    for spec in plan.outputs:
        lines.append(
            f"  {_output_id(spec.name)} [shape=ellipse, style=bold, label={_dot_text(_tensor_label(spec))}];"
        )
    for edge in _edges(plan):
        style = ", style=dashed" if edge.dashed else ""
        lines.append(f"  {edge.source} -> {edge.target} [label={_dot_text(edge.label)}{style}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


# --- SVG: a layered left-to-right layout of our own, so a picture needs no graphviz -------------

_FONT = 12  # px; a character is about 0.6 of it wide in the sans-serif fonts browsers pick
_CHAR = 7.2
_LINE = 16
_PAD = 10
_COLUMN_GAP = 90
_ROW_GAP = 28
_FILL = {
    "input": "#e8f1fb", "output": "#e9f7ec", "model": "#fff4e0", "features": "#f3e8fb",
    "switch": "#fdecea", "split": "#fdecea", "shadow": "#f4f4f4",
}  # fmt: skip


@dataclass(frozen=True)
class _Box:
    id: str
    lines: tuple[str, ...]
    kind: str  # "input" | "output" | a node kind
    dashed: bool
    column: int
    width: float
    height: float


def _layers(plan: Plan) -> dict[str, int]:
    """Column of each drawn thing: inputs 0, a node one right of everything it reads, outputs last."""
    owner = {target: node.name for node in plan.nodes for target in node.branches}
    owner.update({node.fallback: node.name for node in plan.nodes if node.fallback})
    column: dict[str, int] = {_input_id(spec.name): 0 for spec in plan.inputs}
    for node in plan.nodes:  # dependencies first (topological order)
        sources = [_source_id(ref) for ref in node.inputs]
        if node.name in owner:
            sources.append(_node_id(owner[node.name]))
        column[_node_id(node.name)] = 1 + max((column.get(s, 0) for s in sources), default=0)
    for node in plan.nodes:  # a fallback or a branch is read by its owner: keep it beside its owner
        if node.name in owner:
            column[_node_id(node.name)] = max(
                column[_node_id(node.name)], column[_node_id(owner[node.name])] + 1
            )
    last = max(column.values(), default=0) + 1
    for spec in plan.outputs:
        column[_output_id(spec.name)] = last
    return column


def _box(box_id: str, text: str, kind: str, dashed: bool, column: int) -> _Box:
    lines = tuple(text.split("\n"))
    width = max(len(line) for line in lines) * _CHAR + 2 * _PAD
    return _Box(box_id, lines, kind, dashed, column, width, len(lines) * _LINE + _PAD)


def to_svg(plan: Plan) -> str:
    """A standalone SVG picture of ``plan`` (left to right), laid out without graphviz."""
    from xml.sax.saxutils import escape

    column = _layers(plan)
    boxes = [
        _box(_input_id(s.name), _tensor_label(s), "input", False, column[_input_id(s.name)])
        for s in plan.inputs
    ]
    for node in plan.nodes:
        dashed = node.kind == "shadow" or "optional" in node.marks
        boxes.append(
            _box(_node_id(node.name), _node_label(node), node.kind, dashed, column[_node_id(node.name)])
        )
    boxes += [
        _box(_output_id(s.name), _tensor_label(s), "output", False, column[_output_id(s.name)])
        for s in plan.outputs
    ]
    columns: dict[int, list[_Box]] = {}
    for box in boxes:
        columns.setdefault(box.column, []).append(box)
    heights = {c: sum(b.height for b in bs) + _ROW_GAP * (len(bs) - 1) for c, bs in columns.items()}
    total_height = max(heights.values(), default=0) + 2 * _ROW_GAP
    place: dict[str, tuple[float, float, _Box]] = {}  # id -> (x, y, box)
    x = float(_ROW_GAP)
    for c in sorted(columns):
        y = (total_height - heights[c]) / 2
        for box in columns[c]:
            place[box.id] = (x, y, box)
            y += box.height + _ROW_GAP
        x += max(b.width for b in columns[c]) + _COLUMN_GAP
    width = x - _COLUMN_GAP + _ROW_GAP
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{total_height:.0f}" '
        f'viewBox="0 0 {width:.0f} {total_height:.0f}" font-family="Helvetica, Arial, sans-serif" '
        f'font-size="{_FONT}">',
        f"<title>{escape(plan.graph)} version {escape(plan.version)}</title>",
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#555"/></marker></defs>',
    ]
    merged: dict[tuple[str, str, bool], list[str]] = {}  # parallel edges drawn once, labels joined
    for edge in _edges(plan):
        labels = merged.setdefault((edge.source, edge.target, edge.dashed), [])
        if edge.label and edge.label not in labels:
            labels.append(edge.label)
    for (source_id, target_id, dashed), labels in merged.items():
        edge = _Edge(source_id, target_id, ", ".join(labels), dashed)
        if edge.source not in place or edge.target not in place:
            continue
        sx, sy, source = place[edge.source]
        tx, ty, target = place[edge.target]
        x1, y1 = sx + source.width, sy + source.height / 2
        x2, y2 = tx, ty + target.height / 2
        if x2 <= x1:  # pointing back (a branch's answer to its switch, a fallback): loop below
            x1, y1 = sx + source.width / 2, sy + source.height
            x2, y2 = tx + target.width / 2, ty + target.height
            bend = max(source.height, target.height) + 30
            path = (
                f"M {x1:.1f} {y1:.1f} C {x1:.1f} {y1 + bend:.1f}, {x2:.1f} {y2 + bend:.1f}, {x2:.1f} {y2:.1f}"
            )
            lx, ly = (x1 + x2) / 2, max(y1, y2) + bend * 0.75
        else:
            mid = (x1 + x2) / 2
            path = f"M {x1:.1f} {y1:.1f} C {mid:.1f} {y1:.1f}, {mid:.1f} {y2:.1f}, {x2:.1f} {y2:.1f}"
            lx, ly = mid, (y1 + y2) / 2 - 3
        dash = ' stroke-dasharray="5 4"' if edge.dashed else ""
        out.append(f'<path d="{path}" fill="none" stroke="#555"{dash} marker-end="url(#arrow)"/>')
        if edge.label:
            out.append(
                f'<text x="{lx:.1f}" y="{ly:.1f}" text-anchor="middle" font-size="10" fill="#333">'
                f"{escape(edge.label)}</text>"
            )
    for bx, by, box in place.values():
        radius = box.height / 2 if box.kind in ("input", "output") else 6
        dash = ' stroke-dasharray="5 4"' if box.dashed else ""
        fill = _FILL.get(box.kind, "#ffffff")
        out.append(
            f'<rect x="{bx:.1f}" y="{by:.1f}" width="{box.width:.1f}" height="{box.height:.1f}" '
            f'rx="{radius:.1f}" fill="{fill}" stroke="#333"{dash}/>'
        )
        for i, line in enumerate(box.lines):
            weight = ' font-weight="bold"' if i == 0 else ""
            ty = by + _PAD / 2 + _LINE * (i + 0.75)
            cx = bx + box.width / 2
            out.append(f'<text x="{cx:.1f}" y="{ty:.1f}" text-anchor="middle"{weight}>{escape(line)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"
