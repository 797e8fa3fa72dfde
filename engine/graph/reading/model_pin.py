"""What a ``model:`` value may be, and the ``sha256:`` pin beside it (model and shadow nodes).

model: deep.onnx                         a file in the graph folder (the default)
model: models:/fraud-deep@champion       an MLflow registry model, by alias or version number
model: https://models.example.com/deep.onnx
sha256: 3f5a…                            required for a URL; for anything else, checked
"""

from __future__ import annotations

import re
from typing import Any

from engine.graph.reading.reader import Reader
from engine.graph.reading.source import YamlPath

MODEL_WHAT = (
    "'model' (a file relative to the graph folder, models:/NAME/VERSION, models:/NAME@ALIAS "
    "or an https:// URL)"
)
_HEX = re.compile(r"^(sha256:)?[0-9a-fA-F]{64}$")


def read_pin(r: Reader, body: dict[str, Any], path: YamlPath) -> str | None:
    """The node's ``sha256:`` as lowercase hex, or None when it has none (or it is malformed, reported)."""
    if "sha256" not in body:
        return None
    raw = body["sha256"]
    if not isinstance(raw, str) or not _HEX.match(raw.strip()):
        r.error(
            r.at.value((*path, "sha256")), "'sha256' must be the model file's digest: 64 hexadecimal digits"
        )
        return None
    return raw.strip().lower().removeprefix("sha256:")
