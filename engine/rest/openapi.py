"""The OpenAPI 3.1 document of the REST door, built from the route table (``engine.rest.routes``).

Served at ``GET /v2/openapi.json`` and written to ``docs/openapi.json`` by
``python -m engine.rest > docs/openapi.json`` (a test checks the two are equal and
that every route is in it).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Final

from engine import __version__
from engine.rest.spec import Route
from engine.serving.auth import ADMIN, OPEN

_DATATYPES: Final = [
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
    "FP16", "FP32", "FP64", "BYTES",
]  # fmt: skip
_TENSOR_META: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["name", "datatype", "shape"],
    "properties": {
        "name": {"type": "string"},
        "datatype": {"type": "string", "enum": _DATATYPES},
        "shape": {"type": "array", "items": {"type": "integer"}},
    },
}
_PARAMETERS: Final = {"type": "object", "additionalProperties": True}
_STRINGS: Final = {"type": "array", "items": {"type": "string"}}
_OBJECT: Final = {"type": "object", "additionalProperties": True}

SCHEMAS: Final[dict[str, Any]] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {"type": "string", "description": "what is wrong, naming the tensor/node/field"},
            "error_id": {"type": "string", "description": "internal errors: the id in the server log"},
        },
    },
    "Live": {"type": "object", "properties": {"live": {"type": "boolean"}}},
    "Ready": {"type": "object", "properties": {"ready": {"type": "boolean"}}},
    "ModelReady": {
        "type": "object",
        "properties": {"name": {"type": "string"}, "ready": {"type": "boolean"}},
    },
    "ServerMetadata": {
        "type": "object",
        "properties": {"name": {"type": "string"}, "version": {"type": "string"}, "extensions": _STRINGS},
    },
    "ModelMetadata": {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "versions": _STRINGS,
            "platform": {"type": "string"},
            "inputs": {"type": "array", "items": _TENSOR_META},
            "outputs": {"type": "array", "items": _TENSOR_META},
        },
    },
    "ModelConfig": {"description": "Triton's ModelConfig message as JSON (proto field names)", **_OBJECT},
    "Statistics": {
        "type": "object",
        "properties": {
            "model_stats": {
                "type": "array",
                "items": {"description": "Triton's ModelStatistics message as JSON", **_OBJECT},
            }
        },
    },
    "InferRequest": {
        "type": "object",
        "required": ["inputs"],
        "description": "JSON, or (Triton's binary tensor data extension) a JSON header of "
        "Inference-Header-Content-Length bytes followed by the inputs' binary data",
        "properties": {
            "id": {"type": "string"},
            "parameters": {
                "type": "object",
                "properties": {
                    "binary_data_output": {"type": "boolean"},
                    "timeout": {"type": "integer", "description": "microseconds the caller waits"},
                },
                "additionalProperties": True,
            },
            "inputs": {
                "type": "array",
                "items": {
                    **_TENSOR_META,
                    "properties": {
                        **_TENSOR_META["properties"],
                        "data": {"description": "elements, row-major (nested lists are flattened)"},
                        "parameters": {
                            "type": "object",
                            "properties": {"binary_data_size": {"type": "integer"}},
                            "additionalProperties": True,
                        },
                    },
                },
            },
            "outputs": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {
                        "name": {"type": "string"},
                        "parameters": {
                            "type": "object",
                            "properties": {"binary_data": {"type": "boolean"}},
                            "additionalProperties": True,
                        },
                    },
                },
            },
        },
    },
    "InferResponse": {
        "type": "object",
        "properties": {
            "model_name": {"type": "string"},
            "model_version": {"type": "string"},
            "id": {"type": "string"},
            "outputs": {
                "type": "array",
                "items": {
                    **_TENSOR_META,
                    "properties": {
                        **_TENSOR_META["properties"],
                        "data": {"type": "array"},
                        "parameters": {
                            "type": "object",
                            "properties": {"binary_data_size": {"type": "integer"}},
                        },
                    },
                },
            },
        },
    },
    "IndexRequest": {"type": "object", "properties": {"ready": {"type": "boolean"}}},
    "Index": {
        "type": "array",
        "items": {
            "type": "object",
            "properties": {k: {"type": "string"} for k in ("name", "version", "state", "reason")},
        },
    },
    "LoadRequest": {"type": "object", "properties": {"parameters": _PARAMETERS}},
    "Empty": {"type": "object"},
    "Graphs": {"type": "object", "properties": {"graphs": {"type": "array", "items": _OBJECT}}},
    "Description": {"description": "DescribeGraph as JSON: tensors, nodes, mermaid drawing", **_OBJECT},
    "Explanation": {
        "type": "object",
        "properties": {
            "response": {"$ref": "#/components/schemas/InferResponse"},
            "run_ns": {"type": "integer"},
            "nodes": {"type": "array", "items": _OBJECT},
        },
    },
    "ReloadRequest": {"type": "object", "properties": {"names": _STRINGS}},
    "ReloadResults": {"type": "object", "properties": {"results": {"type": "array", "items": _OBJECT}}},
    "ValidateRequest": {
        "type": "object",
        "required": ["yaml"],
        "properties": {k: {"type": "string"} for k in ("yaml", "filename", "graph_dir")},
    },
    "Validation": {
        "type": "object",
        "properties": {"valid": {"type": "boolean"}, "diagnostics": {"type": "array", "items": _OBJECT}},
    },
    "ShadowReport": {"description": "the shadow report (engine.shadow.ShadowReport) as JSON", **_OBJECT},
    "MonitorReport": {"description": "drift per column and window, and live quality, as JSON", **_OBJECT},
    "FeedbackRequest": {
        "type": "object",
        "required": ["graph", "labels"],
        "properties": {
            "graph": {"type": "string"},
            "labels": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["request_id", "value"],
                    "properties": {
                        "request_id": {"type": "string"},
                        "row": {"type": "integer", "minimum": 0},
                        "value": {"type": "number"},
                    },
                },
            },
        },
    },
    "FeedbackCounts": {
        "type": "object",
        "properties": {
            k: {"type": "integer"} for k in ("matched", "duplicate", "late", "unknown", "invalid")
        },
    },
}

_REASONS: Final = {
    400: "the request is malformed (the message names the tensor or field)",
    401: "missing or invalid bearer token",
    403: "this token may not call this path",
    404: "no such graph, version, node or path",
    429: "shed by admission control: retry after Retry-After seconds",
    500: "internal error: the message carries an error id found in the server log",
    501: "a protocol feature this server does not support",
    503: "the server or graph is not ready, or the server is draining",
    504: "the request's timeout passed",
}


def _parameters(path: str) -> list[dict[str, Any]]:
    return [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in re.findall(r"{(\w+)}", path)
    ]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def document(routes: Sequence[Route]) -> dict[str, Any]:
    """The OpenAPI document of ``routes``."""
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        answer = {"content": {"application/json": {"schema": _ref(route.answer)}}} if route.answer else {}
        responses: dict[str, Any] = {"200": {"description": "OK", **answer}}
        codes = set(route.codes) | {500}
        if route.level != OPEN:
            codes |= {401, 403} if route.level == ADMIN else {401}
        for code in sorted(codes):
            responses[str(code)] = {
                "description": _REASONS[code],
                "content": {"application/json": {"schema": _ref("Error")}},
            }
        operation: dict[str, Any] = {
            "summary": route.summary,
            "tags": [route.tag],
            "operationId": route.handler.__name__ + ("_version" if "{version}" in route.path else ""),
            "responses": responses,
        }
        if route.level == OPEN:
            operation["security"] = []
        elif route.level == ADMIN:
            operation["description"] = "Needs the admin token when tokens are configured."
        if route.body:
            content: dict[str, Any] = {"application/json": {"schema": _ref(route.body)}}
            if route.body == "InferRequest":
                content["application/octet-stream"] = {
                    "schema": {"type": "string", "format": "binary"},
                    "description": "JSON header + binary data; send Inference-Header-Content-Length",
                }
            operation["requestBody"] = {"required": route.body == "InferRequest", "content": content}
        if _parameters(route.path):
            operation["parameters"] = _parameters(route.path)
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "graph-engine: Open Inference Protocol v2 over HTTP/REST",
            "version": __version__,
            "description": "KServe's V2 REST protocol with Triton's binary tensor data, model "
            "configuration, statistics and repository extensions, and the engine's own admin "
            "API under /v2/engine. See docs/http.md.",
        },
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": paths,
    }
