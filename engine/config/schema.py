"""The JSON Schema of ``engine.yaml``, derived from the setting declarations.

``schemas/engine.schema.json`` is this module's output (regenerate with
``.venv/bin/python -m engine.config --schema > schemas/engine.schema.json``; a test fails when
they differ). Every declared setting is a key of its type, described by its documentation;
the ``tracing:`` section holds the ``trace_*`` settings without their prefix.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from engine.config.declaration import Setting
from engine.config.files import SECTIONS
from engine.config.settings import SETTINGS

SCHEMA_ID = "https://github.com/graph-engine/graph-engine/schemas/engine.schema.json"
_TYPES: dict[type, str] = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    Path: "string",
    dict: "object",
}


def _property(decl: Setting) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": _TYPES[decl.kind], "description": decl.doc}
    if decl.kind is float:
        schema["type"] = "number"
    if decl.choices:
        schema["enum"] = list(decl.choices)
    default = decl.default
    if isinstance(default, Path):
        default = str(default)
    if default is not None and not (isinstance(default, str) and default == "" and decl.kind is Path):
        schema["default"] = default
    return schema


def engine_schema() -> dict[str, Any]:
    """The schema (JSON Schema 2020-12) of an engine.yaml."""
    properties: dict[str, Any] = {}
    sections: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    for decl in SETTINGS:
        properties[decl.name] = _property(decl)
        for section, prefix in SECTIONS.items():
            if decl.name.startswith(prefix):
                sections[section][decl.name.removeprefix(prefix)] = _property(decl)
    for section, inner in sections.items():
        properties[section] = {"type": "object", "properties": inner, "additionalProperties": False}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "graph-engine engine.yaml",
        "description": "Server settings (docs/configuration.md); flags and ENGINE_* variables win over it",
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }


def schema_text() -> str:
    return json.dumps(engine_schema(), indent=2) + "\n"
