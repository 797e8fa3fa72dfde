"""A setting's value from text (an ``ENGINE_*`` variable, a flag) or from YAML/JSON, and back to JSON.

Every source ends here, so a setting has the same type whichever way it was given: ``Path`` for
paths, ``float`` for seconds even when written ``20``, a ``dict`` for mappings (JSON text in a
variable), and a boolean from ``1/true/yes/on`` or ``0/false/no/off``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from engine.config.declaration import Setting

TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off")


def kind_name(kind: type) -> str:
    """How a setting's type is named in messages and in the reference."""
    if kind is Path:
        return "path"
    return "mapping" if kind is dict else kind.__name__


def parse_text(decl: Setting, raw: str) -> object:
    """``raw`` read as the setting's type; ValueError (without the source) when it is not one."""
    kind = decl.kind
    if kind is bool:
        if raw.lower() in TRUE:
            return True
        if raw.lower() in FALSE:
            return False
        raise ValueError(raw)
    if kind is Path:
        return Path(raw)
    if kind is dict:
        value = json.loads(raw)  # a JSONDecodeError is a ValueError
        if not isinstance(value, dict):
            raise ValueError(raw)
        return value
    return _checked(decl, kind(raw))


def from_env(decl: Setting, raw: str) -> object:
    """The value of the setting's environment variable."""
    try:
        return parse_text(decl, raw)
    except ValueError:
        raise ValueError(f"{decl.env}={raw!r} is not a valid {_expected(decl)}") from None


def coerce(decl: Setting, value: object, where: str) -> object:
    """A value from YAML, JSON or Python as the setting's type; ``where`` names the source in errors."""
    kind = decl.kind
    try:
        if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
            return _checked(decl, float(value))
        if kind is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if kind is str and isinstance(value, str | os.PathLike):
            return _checked(decl, str(value))
        if kind is Path and isinstance(value, str | os.PathLike):
            return Path(value)
        if kind in (bool, dict) and isinstance(value, kind):
            return value
        if isinstance(value, str | int | float):  # text in a file ("9001", "yes"), or a number for a str
            return parse_text(decl, str(value))
    except ValueError:
        pass
    raise ValueError(f"{where}: {decl.name}: {value!r} is not a valid {_expected(decl)}")


def to_plain(decl: Setting, value: object) -> Any:
    """The value as JSON can carry it (a path as its text)."""
    return str(value) if decl.kind is Path else value


def _checked(decl: Setting, value: object) -> object:
    if decl.choices and value not in decl.choices:
        raise ValueError(value)
    return value


def _expected(decl: Setting) -> str:
    if decl.choices:
        return "choice of " + ", ".join(decl.choices)
    return kind_name(decl.kind)
