"""The JSON Schema of ``graph.yaml``, built from the readers' own key tables.

Editors (VS Code's YAML extension, JetBrains, any ``yaml-language-server``) complete and check
keys with it; ``schemas/graph.schema.json`` is this function's output (regenerate with
``.venv/bin/python -m engine.graph.schema > schemas/graph.schema.json``; a test fails when they
differ). It checks the *shape* of a file (keys, value types, datatype and op names); everything
that needs the models or the whole graph (references, dtypes, cycles) stays with
``engine validate``, which reads the file with the same tables.
"""

from __future__ import annotations

import json
from typing import Any

from engine.graph.ops.table import COMBINES, TRANSFORMS
from engine.graph.reading.batching_reader import BATCHING_KEYS
from engine.graph.reading.contract_reader import CONTRACT_KEYS, RULE_KEYS
from engine.graph.reading.features_reader import FIELD_KEYS
from engine.graph.reading.graph_reader import INPUT_KEYS, QUALITY_KEYS, QUALITY_KINDS, TOP_KEYS
from engine.graph.reading.logging_reader import LOGGING_KEYS
from engine.graph.reading.nodes_reader import COMMON_KEYS, EXECUTION_MODES, KINDS
from engine.graph.reading.rollout_reader import (
    CANARY_STEP_KEYS,
    GATE_KEYS,
    ROLLOUT_KEYS,
    SHADOW_STEP_KEYS,
)
from engine.graph.reading.shadow_reader import SHADOW_OF_KEYS
from engine.graph.values.contracts import ACTIONS
from engine.tensors import DataType

SCHEMA_ID = "https://github.com/graph-engine/graph-engine/schemas/graph.schema.json"
_NAME = "^[A-Za-z_][A-Za-z0-9_]*$"
_DATATYPES = sorted({d.value for d in DataType} | {d.value.lower() for d in DataType})
_DURATION = {
    "description": "a duration: '20ms', '1.5s', '2m', '1h', or a number of seconds",
    "anyOf": [
        {"type": "number", "exclusiveMinimum": 0},
        {"type": "string", "pattern": r"^\s*[0-9.]+\s*(us|ms|s|m|h|d)?\s*$"},
    ],
}
_REF = {"type": "string", "description": "inputs.NAME, NODE, or NODE.TENSOR"}
_NUMBER = {"type": "number"}


def _closed(properties: dict[str, Any], required: tuple[str, ...] = (), **extra: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        schema["required"] = list(required)
    schema.update(extra)
    return schema


def _common() -> dict[str, Any]:
    on_error = {
        "description": "fail (the default), default (features nodes), {default: VALUE} or {fallback: NODE}",
        "anyOf": [
            {"enum": ["fail", "default"]},
            _closed({"default": {"type": ["number", "boolean"]}}, ("default",)),
            _closed({"fallback": {"type": "string", "pattern": _NAME}}, ("fallback",)),
        ],
    }
    common = {
        "timeout": _DURATION,
        "description": {"type": "string"},
        "on_error": on_error,
        "optional": {"type": "boolean"},
    }
    assert set(common) == set(COMMON_KEYS)
    return common


def _node_kinds() -> list[dict[str, Any]]:
    common = _common()
    batching = _closed(
        {
            "max_batch_size": {"type": "integer", "minimum": 1, "maximum": 65536},
            "max_queue_delay": {"anyOf": [{"const": 0}, _DURATION]},
            "preferred_batch_sizes": {"type": "array", "items": {"type": "integer", "minimum": 1}},
        },
        ("max_batch_size",),
    )
    assert set(batching["properties"]) == set(BATCHING_KEYS)
    refs = {
        "anyOf": [_REF, {"type": "array", "items": _REF}, {"type": "object", "additionalProperties": _REF}]
    }
    model = _closed(
        {
            "model": {"type": "string", "description": "an ONNX file, relative to the graph folder"},
            "inputs": refs,
            "threads": {"type": "integer", "minimum": 1, "maximum": 256},
            "execution": {"enum": list(EXECUTION_MODES)},
            "batching": batching,
            **common,
        },
        ("model", "inputs"),
    )
    kinds: list[dict[str, Any]] = [model]
    for kind, table in (("transform", TRANSFORMS), ("combine", COMBINES)):
        for op in table.values():
            params = {name: _param(name) for name in sorted(op.params)}
            body: dict[str, Any] = {kind: {"const": op.name, "description": op.summary}, **params, **common}
            if op.name != "expr":
                body["inputs"] = {"anyOf": [_REF, {"type": "array", "items": _REF}]}
            kinds.append(_closed(body, (kind,)))
    case = {
        "anyOf": [
            _closed({"when": {"type": "string"}, "to": {"type": "string", "pattern": _NAME}}, ("when", "to")),
            _closed({"default": {"type": "string", "pattern": _NAME}}, ("default",)),
        ]
    }
    kinds.append(_closed({"switch": {"type": "array", "items": case, "minItems": 1}, **common}, ("switch",)))
    arm = _closed(
        {"to": {"type": "string", "pattern": _NAME}, "weight": {"type": "number", "minimum": 0}},
        ("to", "weight"),
    )
    kinds.append(
        _closed({"split": {"type": "array", "items": arm, "minItems": 1}, "key": _REF, **common}, ("split",))
    )
    field = _closed(
        {
            "datatype": {"enum": _DATATYPES},
            "default": {"type": ["number", "string", "boolean"]},
            "contract": _contract(),
        },
        ("datatype", "default"),
    )
    assert set(field["properties"]) == set(FIELD_KEYS)
    kinds.append(
        _closed(
            {
                "features": {"type": "string", "description": "a feature source of the server config"},
                "key": _REF,
                "fields": {"type": "object", "additionalProperties": field, "minProperties": 1},
                "max_age": _DURATION,
                "cache": _closed({"ttl": _DURATION}, ("ttl",)),
                **common,
            },
            ("features", "key", "fields"),
        )
    )
    kinds.append(
        _closed(
            {
                "shadow": {"type": "string", "pattern": _NAME, "description": "the model node it mirrors"},
                "model": {"type": "string"},
                "compare": {"type": "object", "additionalProperties": _rule()},
                "sample": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
                "threads": {"type": "integer", "minimum": 1, "maximum": 256},
                **common,
            },
            ("shadow", "model"),
        )
    )
    return kinds


def _param(name: str) -> dict[str, Any]:
    params: dict[str, dict[str, Any]] = {
        "axis": {"type": "integer"},
        "start": {"type": ["integer", "null"]},
        "stop": {"type": ["integer", "null"]},
        "to": {"enum": _DATATYPES},
        "shape": {"type": "array", "items": {"type": "integer"}, "minItems": 1},
        "value": _NUMBER,
        "expr": {"type": "string", "description": "an expression (docs/graph-language.md#expressions)"},
        "weights": {"type": "array", "items": {"type": "number", "minimum": 0}},
    }
    return params[name]


def _rule() -> dict[str, Any]:
    return {
        "anyOf": [
            {"enum": ["numeric", "class", "score"]},
            _closed(
                {
                    "kind": {"enum": ["numeric", "class", "score"]},
                    "abs_tol": {"type": "number", "minimum": 0},
                    "rel_tol": {"type": "number", "minimum": 0},
                    "max_classes": {"type": "integer", "minimum": 2, "maximum": 1024},
                    "window": {"type": "integer", "minimum": 2},
                    "column": {"type": "integer"},
                }
            ),
        ]
    }


def _contract() -> dict[str, Any]:
    """``contract:`` on a graph input or a feature field (docs/graph-language.md#data-contracts)."""
    bound = {"type": ["number", "null"]}
    rules: dict[str, Any] = {
        "range": {"type": "array", "items": bound, "minItems": 2, "maxItems": 2},
        "allow_nan": {"type": "boolean"},
        "values": {"type": "array", "items": {"type": ["integer", "boolean", "string"]}, "minItems": 1},
        "on_violation": {"enum": list(ACTIONS)},
    }
    assert set(rules) == set(RULE_KEYS)
    column = _closed(dict(rules))
    contract = _closed({**rules, "columns": {"type": "object", "additionalProperties": column}})
    assert set(contract["properties"]) == set(CONTRACT_KEYS)
    return contract


def _rollout() -> dict[str, Any]:
    requests = {"type": "integer", "minimum": 1}
    bound: list[dict[str, Any]] = [{"required": ["requests"]}, {"required": ["duration"]}]
    shadow = _closed({"requests": requests, "duration": _DURATION}, anyOf=bound)
    assert set(shadow["properties"]) == set(SHADOW_STEP_KEYS)
    canary = _closed(
        {
            "weight": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
            "requests": requests,
            "duration": _DURATION,
        },
        ("weight",),
        anyOf=bound,
    )
    assert set(canary["properties"]) == set(CANARY_STEP_KEYS)
    step = {
        "anyOf": [
            {"const": "promote"},
            _closed({"shadow": shadow}, ("shadow",)),
            _closed({"canary": canary}, ("canary",)),
        ]
    }
    gates = _closed(
        {
            "max_error_rate_increase": {"type": "number", "minimum": 0, "maximum": 1},
            "max_p99_ratio": {"type": "number", "exclusiveMinimum": 0},
            "min_agreement": {
                "type": "object",
                "additionalProperties": {"type": "number", "minimum": 0, "maximum": 1},
            },
            "min_requests": {"type": "integer", "minimum": 1},
        }
    )
    assert set(gates["properties"]) == set(GATE_KEYS)
    rollout = _closed(
        {
            "steps": {"type": "array", "items": step, "minItems": 1},
            "gates": gates,
            "compare": {"type": "object", "additionalProperties": _rule()},
            "sticky": {"type": "string", "pattern": r"^inputs\.[A-Za-z_][A-Za-z0-9_]*$"},
        },
        ("steps",),
        description="replace the serving version step by step (docs/rollouts.md)",
    )
    assert set(rollout["properties"]) == set(ROLLOUT_KEYS)
    return rollout


def graph_schema() -> dict[str, Any]:
    """The schema (JSON Schema 2020-12) of one graph.yaml."""
    tensor = _closed(
        {
            "datatype": {"enum": _DATATYPES},
            "shape": {"type": "array", "items": {"type": "integer", "minimum": -1}, "minItems": 1},
            "description": {"type": "string"},
            "contract": _contract(),
        },
        ("datatype", "shape"),
    )
    assert set(tensor["properties"]) == set(INPUT_KEYS)
    quality = _closed(
        {
            "output": {"type": "string", "pattern": _NAME},
            "kind": {"enum": list(QUALITY_KINDS)},
            "threshold": {"type": "number"},
        },
        ("output",),
    )
    assert set(quality["properties"]) == set(QUALITY_KEYS)
    logging = _closed(
        {
            "sample": {"type": "number", "minimum": 0, "maximum": 1},
            "always_on": {"type": "array", "items": {"enum": ["error", "shadow_disagreement"]}},
            "nodes": {"type": "boolean"},
            "redact": {"type": "array", "items": {"type": "string"}},
            "hash": {"type": "array", "items": {"type": "string"}},
            "max_tensor_elements": {"type": "integer", "minimum": 0},
        }
    )
    assert set(logging["properties"]) == set(LOGGING_KEYS)
    shadow_of = _closed(
        {
            "graph": {"type": "string"},
            "sample": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
            "timeout": _DURATION,
            "compare": {"type": "object", "additionalProperties": _rule()},
        },
        ("graph",),
    )
    assert set(shadow_of["properties"]) == set(SHADOW_OF_KEYS)
    rollout = _rollout()
    top = _closed(
        {
            "graph": {"type": "string", "pattern": "^[A-Za-z0-9_.-]+$"},
            "version": {"type": "integer", "minimum": 1},
            "description": {"type": "string"},
            "inputs": {
                "type": "object",
                "minProperties": 1,
                "propertyNames": {"pattern": _NAME},
                "additionalProperties": tensor,
            },
            "nodes": {
                "type": "object",
                "minProperties": 1,
                "propertyNames": {"pattern": _NAME, "not": {"const": "inputs"}},
                "additionalProperties": {"anyOf": _node_kinds()},
            },
            "outputs": {"type": "object", "minProperties": 1, "additionalProperties": _REF},
            "logging": logging,
            "shadow_of": {"anyOf": [{"type": "string"}, shadow_of]},
            "quality": quality,
            "rollout": rollout,
        },
        ("inputs", "nodes", "outputs"),
    )
    assert set(top["properties"]) == set(TOP_KEYS)
    assert len(KINDS) == 7
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "graph-engine graph.yaml",
        "description": "One inference graph: inputs, nodes and outputs (docs/graph-language.md)",
        **top,
    }


def schema_text() -> str:
    return json.dumps(graph_schema(), indent=2) + "\n"


if __name__ == "__main__":
    print(schema_text(), end="")
