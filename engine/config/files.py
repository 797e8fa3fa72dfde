"""``engine.yaml``: a YAML mapping of setting names to values, checked against the declarations.

A key is a setting's name; a section groups settings that share a prefix (``tracing: {exporter:
otlp}`` is ``trace_exporter: otlp``). An unknown key is an error with a "did you mean" suggestion,
and every value is converted to its setting's type, so a file fails at start-up, not later.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from engine.config.declaration import Setting
from engine.config.values import coerce

REPOSITORY_CONFIG = "engine.yaml"
"""The file a graph repository may carry: ``<graphs>/engine.yaml``."""
SECTIONS = {"tracing": "trace_"}
"""Sections of a config file, each holding the settings whose names start with its prefix."""


def repository_config(graphs: Path) -> Path | None:
    """``<graphs>/engine.yaml`` when it exists: the config used when none is named."""
    candidate = graphs / REPOSITORY_CONFIG
    return candidate if candidate.is_file() else None


def section_key(decl: Setting) -> str | None:
    """``tracing.exporter`` for ``trace_exporter``: where the setting may also sit in a file."""
    for section, prefix in SECTIONS.items():
        if decl.name.startswith(prefix):
            return f"{section}.{decl.name.removeprefix(prefix)}"
    return None


def read_settings_file(path: Path, declared: Mapping[str, Setting]) -> dict[str, Any]:
    """The settings a YAML file gives, by name, each of its declared type."""
    where = f"config file {path}"
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{where}: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping of setting names to values")
    found: dict[str, Any] = {}
    for key, value in data.items():
        if key in SECTIONS:
            found.update(_section(where, str(key), value, declared))
            continue
        if key not in declared:
            raise ValueError(
                f"{where}: unknown setting '{key}'{_suggestion(str(key), [*declared, *SECTIONS])}"
            )
        found[key] = coerce(declared[key], value, where)
    for name, value in found.items():
        complete = declared[name].in_file
        if complete is not None:
            found[name] = complete(value, path.parent)
    return found


def _section(where: str, section: str, value: object, declared: Mapping[str, Setting]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{where}: {section}: expected a mapping")
    prefix = SECTIONS[section]
    keys = [name.removeprefix(prefix) for name in declared if name.startswith(prefix)]
    found: dict[str, Any] = {}
    for key, item in value.items():
        if str(key) not in keys:
            close = _suggestion(str(key), keys, f"{section}.")
            raise ValueError(f"{where}: unknown setting '{section}.{key}'{close}")
        found[prefix + str(key)] = coerce(declared[prefix + str(key)], item, where)
    return found


def _suggestion(key: str, names: list[str], prefix: str = "") -> str:
    close = difflib.get_close_matches(key, names, n=1)
    return f"; did you mean '{prefix}{close[0]}'?" if close else ""


def resolve_source_paths(sources: object, base: Path) -> object:
    """``feature_sources`` with each relative ``path:`` made absolute against the config's folder."""
    if not isinstance(sources, dict):
        return sources
    resolved: dict[str, Any] = {}
    for name, entry in sources.items():
        if (
            isinstance(entry, dict)
            and isinstance(entry.get("path"), str)
            and not Path(entry["path"]).is_absolute()
        ):
            entry = {**entry, "path": str((base / entry["path"]).resolve())}
        resolved[name] = entry
    return resolved
