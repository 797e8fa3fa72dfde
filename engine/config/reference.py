"""The settings reference, docs/configuration.md, generated from the declarations.

Regenerate it with ``.venv/bin/python -m engine.config > docs/configuration.md``;
``tests/unit/test_config.py`` fails when the committed file differs from what this produces.
"""

from __future__ import annotations

from engine.config.declaration import Setting
from engine.config.files import section_key
from engine.config.settings import SETTINGS
from engine.config.values import kind_name

INTRO = """\
# Configuration reference

<!-- Generated from engine/config/settings.py by
     `.venv/bin/python -m engine.config > docs/configuration.md`: do not edit by hand. -->

Every setting of `engine serve` is declared once, in `engine/config/settings.py`; its flag,
its environment variable, its `engine.yaml` key and this page are derived from that declaration.
The first of these that gives a setting wins:

1. the `engine serve` flag;
2. the environment variable `ENGINE_<NAME>`;
3. the config file: `--config FILE` or `ENGINE_CONFIG`, else `<graphs>/engine.yaml` when it
   exists. It is a YAML mapping of setting names to values; a `tracing:` section holds the
   `trace_*` settings (`tracing: {exporter: otlp}` is `trace_exporter: otlp`). An unknown key is
   an error with a "did you mean" suggestion. When `--config` names another file, the graph
   repository's own `engine.yaml` still supplies the feature sources its graphs read (the named
   file replaces them by name);
4. the default.

In an environment variable a boolean is `1`/`true`/`yes`/`on` or `0`/`false`/`no`/`off`, and a
mapping is JSON (`ENGINE_REQUEST_LOG='{"sink": "jsonl", "directory": "logs"}'`). With
`--workers N` the parent resolves the settings once and hands them, whole, to every worker.
"""


def markdown_table() -> str:
    """One row per declared setting: flag, variable, YAML key, type, default, what it does."""
    rows = [
        "| flag | env var | engine.yaml | type | default | what it does |",
        "|---|---|---|---|---|---|",
    ]
    for decl in SETTINGS:
        cells = (_flag(decl), f"`{decl.env}`", _yaml_key(decl), _type(decl), _default(decl), decl.doc)
        rows.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(rows) + "\n"


def markdown_document() -> str:
    """The whole of docs/configuration.md."""
    return f"{INTRO}\n{markdown_table()}"


def _flag(decl: Setting) -> str:
    if decl.positional:
        return f"`{decl.metavar or decl.name.upper()}` (argument)"
    if decl.flag is None:
        return "—"
    if decl.kind is bool:
        return f"`{decl.flag}` / `--no-{decl.flag.removeprefix('--')}`"
    return f"`{decl.flag} {decl.metavar}`" if decl.metavar else f"`{decl.flag}`"


def _yaml_key(decl: Setting) -> str:
    also = section_key(decl)
    return f"`{decl.yaml_key}` or `{also}`" if also else f"`{decl.yaml_key}`"


def _type(decl: Setting) -> str:
    if decl.choices:
        return " | ".join(f"`{choice}`" for choice in decl.choices)
    return kind_name(decl.kind)


def _default(decl: Setting) -> str:
    default = decl.default
    if isinstance(default, bool):
        return "`true`" if default else "`false`"
    if default == "":
        return '`""`'
    return f"`{default}`"
