"""Which of the engine's modules run compiled (mypyc, setup.py), and which of those are stale.

A compiled module is an extension file beside its source; Python imports the extension. In a
source checkout, a source edited after the last ``make compiled`` is therefore not what runs:
``stale()`` names those modules (the server warns at start-up; the test suite refuses to run).
"""

from __future__ import annotations

import importlib.machinery
import sys
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
_SUFFIXES = tuple(importlib.machinery.EXTENSION_SUFFIXES)


def _extensions() -> list[Path]:
    return sorted(p for p in _PACKAGE.rglob("*.so") if p.name.endswith(_SUFFIXES) and "__mypyc" not in p.name)


def _module(extension: Path) -> str:
    name = extension.name
    for suffix in _SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    parts = extension.parent.relative_to(_PACKAGE.parent).parts
    return ".".join((*parts, name))


def compiled() -> list[str]:
    """The engine's modules that are imported, or would be, from an extension file."""
    return [_module(p) for p in _extensions()]


def loaded_compiled() -> list[str]:
    """Of the modules imported so far, those that were loaded from an extension file."""
    return sorted(
        name
        for name, module in list(sys.modules.items())
        if name.startswith("engine.")
        and "__mypyc" not in name  # the group's shared library, not a module of the engine's
        and str(getattr(module, "__file__", "") or "").endswith(_SUFFIXES)
    )


def stale() -> list[str]:
    """Compiled modules built before the newest of the engine's sources was last changed.

    Any source counts, not only the module's own: a compiled module can inline another module's
    ``Final`` constants, so ``make compiled`` rebuilds them all whenever any source changes."""
    extensions = _extensions()
    if not extensions or not (_PACKAGE.parent / "setup.py").is_file():
        return []  # nothing compiled, or an installed package (its files' times are the install's)
    newest = max(p.stat().st_mtime for p in _PACKAGE.rglob("*.py") if "generated" not in p.parts)
    return [_module(p) for p in extensions if p.stat().st_mtime < newest]
