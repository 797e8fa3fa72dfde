"""The ``engine serve`` command line, derived from the declarations: one option per setting that has one.

A boolean gets ``--name`` and ``--no-name``; a setting declared positional (the graphs folder) is
the command's argument. An option not given leaves its setting to the environment, the config
file and the default, so every option's argparse default is None.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from engine.config.declaration import Setting
from engine.config.settings import SETTINGS
from engine.config.values import kind_name, parse_text


def add_setting_flags(parser: argparse.ArgumentParser) -> None:
    """Add an argument to ``parser`` for every setting that has a flag (or is positional)."""
    for decl in SETTINGS:
        help_text = _help(decl)
        if decl.positional:
            parser.add_argument(
                decl.name, nargs="?", type=_reader(decl), metavar=decl.metavar, help=help_text
            )
        elif decl.flag is None:
            continue
        elif decl.kind is bool:
            parser.add_argument(
                decl.flag, dest=decl.name, action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
        else:
            parser.add_argument(
                decl.flag,
                dest=decl.name,
                type=_reader(decl),
                metavar=decl.metavar,
                choices=decl.choices or None,
                default=None,
                help=help_text,
            )


def flag_values(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given on the command line (None for those that were not)."""
    return {decl.name: getattr(args, decl.name, None) for decl in SETTINGS if decl.flag or decl.positional}


def _reader(decl: Setting) -> Callable[[str], object]:
    """The argparse ``type`` of a setting: its own ``from_flag``, else the text read as its type."""
    if decl.from_flag is not None:
        return decl.from_flag
    if decl.choices:
        return str  # argparse's own check names the choices

    def read(text: str) -> object:
        try:
            return parse_text(decl, text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a valid {kind_name(decl.kind)}") from None

    return read


def _help(decl: Setting) -> str:
    shown = "" if decl.default in ("", {}) else f"; default {decl.default}"
    return f"{decl.doc} ({decl.env}{shown})".replace("%", "%%")
