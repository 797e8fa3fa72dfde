"""Plain YAML values -> ``GraphSpec``: keys, value types, datatypes, shapes, node kinds.

This is the structural half of validation. Every problem is reported (with a
"did you mean" for unknown keys) and reading continues, so one pass finds all
of them. A node too broken to read is left out of ``GraphSpec.nodes`` and named
in ``GraphSpec.blocked``, so references to it are not reported a second time.
"""

from __future__ import annotations

import re
from typing import Any

from engine.graph.reading.contract_reader import read_contract
from engine.graph.reading.logging_reader import read_logging
from engine.graph.reading.nodes_reader import NodeReader
from engine.graph.reading.reader import Reader, describe
from engine.graph.reading.rollout_reader import read_rollout
from engine.graph.reading.shadow_reader import read_shadow_of
from engine.graph.reading.source import SourceDoc, YamlPath
from engine.graph.values.diagnostics import Pos, Report, did_you_mean, one_of
from engine.graph.values.spec import GraphSpec, InputSpec, NodeSpec, OutputSpec, QualitySpec

TOP_KEYS = (
    "graph",
    "version",
    "description",
    "inputs",
    "nodes",
    "outputs",
    "logging",
    "shadow_of",
    "quality",
    "rollout",
)
QUALITY_KEYS = ("output", "kind", "threshold")
QUALITY_KINDS = ("binary", "regression")
INPUT_KEYS = ("datatype", "shape", "description", "contract")
MAX_DIM = 2**31 - 1
"""The largest fixed dimension a declared shape may name (requests are further bounded by max_elements)."""
SERVED_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:/\-]*$")


def read_graph(
    doc: SourceDoc, report: Report, *, file: str, default_name: str, folder_version: int | None
) -> GraphSpec | None:
    """The spec of a loaded document (None when its top level is unusable)."""
    reader = Reader(doc, report)
    top = reader.mapping(doc.data, (), "a graph file")
    if top is None:
        return None
    reader.check_keys(top, (), TOP_KEYS, "the graph file")
    for key in ("inputs", "nodes", "outputs"):
        if key not in top:
            reader.error(Pos(1, 1), f"missing required key '{key}'")
    name = _graph_name(reader, top, default_name)
    version = _version(reader, top, folder_version)
    description = top.get("description")
    if description is not None and not isinstance(description, str):
        reader.error(reader.at.value(("description",)), "'description' must be text")
    blocked_inputs: set[str] = set()
    inputs = _inputs(reader, top.get("inputs"), blocked_inputs)
    nodes_reader = NodeReader(reader)
    nodes: list[NodeSpec] = []
    raw_nodes = top.get("nodes")
    if raw_nodes is not None and (mapping := reader.mapping(raw_nodes, ("nodes",), "'nodes'")) is not None:
        if not mapping:
            reader.error(reader.at.value(("nodes",)), "'nodes' is empty; a graph needs at least one node")
        for node_name, raw in mapping.items():
            node = nodes_reader.node(node_name, raw)
            if node is not None:
                nodes.append(node)
    outputs = _outputs(reader, top.get("outputs"))
    logging = read_logging(reader, top.get("logging"), outputs)
    shadow_of = (
        read_shadow_of(reader, top["shadow_of"], [o.name for o in outputs]) if "shadow_of" in top else None
    )
    quality = _quality(reader, top["quality"], outputs) if "quality" in top else None
    rollout = (
        read_rollout(reader, top["rollout"], [o.name for o in outputs], [i.name for i in inputs])
        if "rollout" in top
        else None
    )
    if shadow_of is not None and shadow_of.graph == name:
        reader.error(shadow_of.pos, f"graph '{name}' cannot be a shadow of itself")
    return GraphSpec(
        name=name,
        version=version,
        description=description if isinstance(description, str) else "",
        inputs=tuple(inputs),
        nodes=tuple(nodes),
        outputs=tuple(outputs),
        file=report.file,
        blocked=frozenset(nodes_reader.blocked),
        blocked_inputs=frozenset(blocked_inputs),
        logging=logging,
        shadow_of=shadow_of,
        quality=quality,
        rollout=rollout,
    )


def _quality(reader: Reader, raw: Any, outputs: list[OutputSpec]) -> QualitySpec | None:
    """``quality: {output: score, kind: binary, threshold: 0.5}``."""
    path: YamlPath = ("quality",)
    body = reader.mapping(raw, path, "'quality' (e.g. {output: score, threshold: 0.5})")
    if body is None:
        return None
    reader.check_keys(body, path, QUALITY_KEYS, "'quality'")
    if "output" not in body:
        reader.error(
            reader.at.key(path), "'quality' needs 'output' (the served output labels are compared with)"
        )
        return None
    output = reader.text(body["output"], (*path, "output"), "'output'")
    names = [o.name for o in outputs]
    if output is not None and output not in names:
        hint = did_you_mean(output, names) or f" (outputs: {', '.join(names)})"
        reader.error(
            reader.at.text((*path, "output")), f"'quality' names output '{output}', not served{hint}"
        )
        return None
    kind = body.get("kind", "binary")
    if kind not in QUALITY_KINDS:
        reader.error(
            reader.at.text((*path, "kind")), f"'kind' must be {one_of(QUALITY_KINDS)}, got {describe(kind)}"
        )
        return None
    threshold = body.get("threshold", 0.5)
    if isinstance(threshold, bool) or not isinstance(threshold, int | float):
        reader.error(
            reader.at.value((*path, "threshold")), f"'threshold' must be a number, got {describe(threshold)}"
        )
        return None
    if kind == "regression" and "threshold" in body:
        reader.error(reader.at.key((*path, "threshold")), "'threshold' applies to kind: binary")
        return None
    if output is None:
        return None
    return QualitySpec(output, str(kind), float(threshold), reader.at.key(path))


def _graph_name(reader: Reader, top: dict[str, Any], default_name: str) -> str:
    if "graph" not in top:
        return default_name
    name = reader.text(top["graph"], ("graph",), "'graph'")
    if name is not None and name != default_name:
        reader.error(
            reader.at.text(("graph",)),
            f"graph name '{name}' does not match its folder '{default_name}'; "
            "rename the folder or remove the 'graph' key",
        )
    return default_name


def _version(reader: Reader, top: dict[str, Any], folder_version: int | None) -> str:
    if "version" not in top:
        return str(folder_version or 1)
    value = top["version"]
    pos = reader.at.value(("version",))
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        reader.error(pos, f"'version' must be a positive whole number, got {describe(value)}")
        return str(folder_version or 1)
    if folder_version is not None and value != folder_version:
        reader.error(pos, f"'version: {value}' disagrees with its version folder '{folder_version}'")
        return str(folder_version)
    return str(value)


def _inputs(reader: Reader, raw: Any, blocked: set[str]) -> list[InputSpec]:
    if raw is None or (mapping := reader.mapping(raw, ("inputs",), "'inputs'")) is None:
        return []
    if not mapping:
        reader.error(reader.at.value(("inputs",)), "'inputs' is empty; a graph needs at least one input")
    out: list[InputSpec] = []
    for name, decl in mapping.items():
        path: YamlPath = ("inputs", name)
        reader.name(name, path, "input")
        body = reader.mapping(decl, path, f"input '{name}'")
        if body is None:
            blocked.add(name)
            continue
        reader.check_keys(body, path, INPUT_KEYS, f"input '{name}'")
        datatype = reader.datatype(body, path, f"input '{name}'")
        shape = _shape(reader, body, path, f"input '{name}'")
        description = body.get("description", "")
        if not isinstance(description, str):
            reader.error(reader.at.value((*path, "description")), "'description' must be text")
            description = ""
        contract = None
        if "contract" in body and datatype is not None:
            contract = read_contract(reader, body["contract"], (*path, "contract"), name, datatype, shape)
        if datatype is not None and shape is not None:
            out.append(InputSpec(name, datatype, shape, description, reader.at.key(path), contract))
        else:
            blocked.add(name)
    return out


def _shape(reader: Reader, body: dict[str, Any], path: YamlPath, what: str) -> tuple[int, ...] | None:
    if "shape" not in body:
        reader.error(reader.at.key(path), f"{what} needs a 'shape' (e.g. [-1, 4]; -1 is any size)")
        return None
    value = body["shape"]
    spath = (*path, "shape")
    if not isinstance(value, list) or not value:
        reader.error(
            reader.at.value(spath), f"'shape' must be a non-empty list such as [-1, 4], got {describe(value)}"
        )
        return None
    ok = True
    for i, dim in enumerate(value):
        if isinstance(dim, bool) or not isinstance(dim, int) or (dim < 1 and dim != -1):
            reader.error(
                reader.at.value((*spath, i)),
                f"shape dimension {i} must be a positive whole number or -1 (any size), got {describe(dim)}",
            )
            ok = False
        elif dim > MAX_DIM:
            reader.error(
                reader.at.value((*spath, i)),
                f"shape dimension {i} is {dim}, larger than any tensor can be (at most {MAX_DIM:,})",
            )
            ok = False
    return tuple(value) if ok else None


def _outputs(reader: Reader, raw: Any) -> list[OutputSpec]:
    if raw is None or (mapping := reader.mapping(raw, ("outputs",), "'outputs'")) is None:
        return []
    if not mapping:
        reader.error(reader.at.value(("outputs",)), "'outputs' is empty; a graph needs at least one output")
    out: list[OutputSpec] = []
    for name, value in mapping.items():
        path: YamlPath = ("outputs", name)
        reader.name(name, path, "output", SERVED_NAME)
        ref = reader.ref(value, path, f"output '{name}'")
        if ref is not None:
            out.append(OutputSpec(name, ref, reader.at.key(path)))
    return out
