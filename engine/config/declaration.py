"""What one server setting is: its declaration, and the ``setting()`` field that makes one.

A setting is declared once, as a field of ``ServeSettings``::

    grace_s: float = setting(10.0, "seconds in-flight calls get to finish on SIGTERM", flag="--grace")

The field gives its name, type and default; everything else is derived from the name unless the
declaration says otherwise: the environment variable ``ENGINE_<NAME>``, the ``engine serve`` flag
``--<name-with-dashes>`` and the ``engine.yaml`` key (the name itself). The flag parser, the
environment and file readers, the JSON hand-over to ``--workers`` processes and the settings
reference (docs/configuration.md) all read these declarations, never a list of their own.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
KINDS: tuple[type, ...] = (str, int, float, bool, Path, dict)
"""The types a setting may have."""
_KEY = "engine.setting"


@dataclass(frozen=True)
class Setting:
    """One declared setting: its name, type, default, documentation and the ways to give it."""

    name: str
    kind: type
    default: object
    doc: str
    flag: str | None
    """The ``engine serve`` option (``--grace``), or None: no option (a positional has none either)."""
    positional: bool = False
    """Given as ``engine serve``'s positional argument (``metavar`` names it) instead of an option."""
    metavar: str | None = None
    choices: tuple[str, ...] = ()
    from_flag: Callable[[str], object] | None = None
    """Turns the flag's text into the value, when that is not simply the text read as ``kind``."""
    in_file: Callable[[object, Path], object] | None = None
    """Completes a value read from a config file, given the file's folder (e.g. relative paths)."""

    @property
    def env(self) -> str:
        """The environment variable that gives this setting."""
        return f"ENGINE_{self.name.upper()}"

    @property
    def yaml_key(self) -> str:
        """The key of this setting in ``engine.yaml``."""
        return self.name

    def fresh_default(self) -> object:
        """The default, copied when it is a mutable mapping."""
        return copy.deepcopy(self.default)


@dataclass(frozen=True)
class _Options:
    doc: str
    flag: str | bool
    positional: bool
    metavar: str | None
    choices: tuple[str, ...]
    from_flag: Callable[[str], object] | None
    in_file: Callable[[object, Path], object] | None


def setting(
    default: T,
    doc: str,
    *,
    flag: str | bool = True,
    positional: bool = False,
    metavar: str | None = None,
    choices: tuple[str, ...] = (),
    from_flag: Callable[[str], object] | None = None,
    in_file: Callable[[object, Path], object] | None = None,
) -> T:
    """A dataclass field declaring a setting; ``flag`` True derives the option, False means none."""
    options = _Options(doc, flag, positional, metavar, choices, from_flag, in_file)
    metadata = {_KEY: options}
    if isinstance(default, dict):
        field: Any = dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    else:
        field = dataclasses.field(default=default, metadata=metadata)
    return typing.cast(T, field)


@functools.cache
def declarations(cls: type) -> tuple[Setting, ...]:
    """Every setting ``cls`` declares with ``setting()``, in declaration order."""
    hints = typing.get_type_hints(cls)
    found = []
    for f in dataclasses.fields(cls):
        options = f.metadata.get(_KEY)
        if not isinstance(options, _Options):
            raise TypeError(f"{cls.__name__}.{f.name} is not declared with setting()")
        kind = typing.get_origin(hints[f.name]) or hints[f.name]
        if kind not in KINDS:
            raise TypeError(f"{cls.__name__}.{f.name}: settings cannot be of type {hints[f.name]}")
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        flag: str | None = None
        if isinstance(options.flag, str):
            flag = options.flag
        elif options.flag and not options.positional:
            flag = "--" + f.name.replace("_", "-")
        found.append(
            Setting(
                name=f.name,
                kind=kind,
                default=default,
                doc=options.doc,
                flag=flag,
                positional=options.positional,
                metavar=options.metavar,
                choices=options.choices,
                from_flag=options.from_flag,
                in_file=options.in_file,
            )
        )
    return tuple(found)
