"""Plain JSON values for the REST door's answers about the server and its graphs.

Triton's HTTP model configuration and statistics extensions answer the JSON form of the
gRPC messages (field names as in the .proto, 64-bit integers as JSON numbers), so the REST
door renders them from the same V2 metadata renderers the gRPC door uses
(``engine.protocol.metadata``): both doors report the same config and the same numbers.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from engine.interfaces import NodeEvent
from engine.rest.codec import tensor_json
from engine.serving import FailedGraphView, GraphSummary, GraphView, IndexRow, ReloadOutcome
from engine.tensors import TensorSpec


def message_json(message: Message) -> dict[str, Any]:
    """A protobuf message as JSON values: proto field names, enums by name, integers as numbers."""
    out: dict[str, Any] = {}
    for field, value in message.ListFields():
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            out[field.name] = {key: _value(value_field, item) for key, item in value.items()}
        elif field.is_repeated:
            out[field.name] = [_value(field, item) for item in value]
        else:
            out[field.name] = _value(field, value)
    return out


def _value(field: FieldDescriptor, value: Any) -> Any:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return message_json(value)
    if field.type == FieldDescriptor.TYPE_ENUM and field.enum_type is not None:
        return field.enum_type.values_by_number[value].name
    if field.type == FieldDescriptor.TYPE_BYTES:
        return value.decode(errors="replace")
    return value


def node_event(event: NodeEvent, include_tensors: bool) -> dict[str, Any]:
    """One node of an Explain answer: its timing, rows, branch and (asked for) its tensors."""
    entry: dict[str, Any] = {
        "name": event.node,
        "kind": event.kind,
        "start_ns": event.start_ns,
        "duration_ns": event.duration_ns,
        "rows": event.rows,
        "error": event.error or "",
        "branch": dict(event.branch or {}),
    }
    if include_tensors:
        entry["inputs"] = [tensor_json(n, a) for n, a in event.inputs.items()]
        entry["outputs"] = [tensor_json(n, a) for n, a in event.outputs.items()]
    return entry


def tensor(spec: TensorSpec) -> dict[str, Any]:
    return {"name": spec.name, "datatype": spec.datatype.value, "shape": list(spec.shape)}


def index_row(row: IndexRow) -> dict[str, str]:
    return {"name": row.name, "version": row.version, "state": row.state, "reason": row.reason}


def summary(graph: GraphSummary) -> dict[str, Any]:
    return {
        "name": graph.name,
        "latest": graph.latest,
        "state": graph.state,
        "last_error": graph.last_error,
        "versions": list(graph.versions),
    }


def outcome(result: ReloadOutcome) -> dict[str, str]:
    return {"name": result.name, "version": result.version, "action": result.action, "error": result.error}


def describe(view: GraphView | FailedGraphView) -> dict[str, Any]:
    """DescribeGraph as JSON (no file system paths: those stay in the server log)."""
    if isinstance(view, FailedGraphView):
        return {
            "name": view.name,
            "state": view.state,
            "last_error": view.last_error,
            "diagnostics": [
                {
                    "file": d.file,
                    "line": d.line,
                    "column": d.col,
                    "severity": d.severity,
                    "message": d.message,
                }
                for d in view.diagnostics
            ],
        }
    return {
        "name": view.name,
        "version": view.version,
        "versions": list(view.versions),
        "state": view.state,
        "last_error": view.last_error,
        "description": view.description,
        "source_sha256": view.source_sha256,
        "inputs": [tensor(s) for s in view.inputs],
        "outputs": [
            {**tensor(s), "ref": ref} for s, ref in zip(view.outputs, view.output_refs, strict=False)
        ],
        "nodes": [
            {
                "name": n.name,
                "kind": n.kind,
                "detail": n.detail,
                "inputs": list(n.inputs),
                "outputs": [tensor(s) for s in n.outputs],
                "branches": list(n.branches),
                "model_sha256": n.model_sha256 or "",
            }
            for n in view.nodes
        ],
        "logging": {"enabled": view.logging_enabled, "sample": view.logging_sample},
        "mermaid": view.mermaid,
    }
