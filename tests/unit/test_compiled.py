"""The hot path that ``make test`` tests is the compiled one the image runs (setup.py, mypyc)."""

from __future__ import annotations

import ast
import importlib
import logging
import os
import time
from pathlib import Path

import pytest

from engine import compiled

ROOT = Path(__file__).resolve().parents[2]


def _listed() -> list[str]:
    """setup.py's COMPILED, read as data (running setup.py would build)."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "COMPILED" for t in node.targets
        ):
            paths = ast.literal_eval(node.value)
            return [p.removesuffix(".py").replace("/", ".") for p in paths]
    raise AssertionError("setup.py has no COMPILED list")


@pytest.mark.skipif(os.environ.get("ENGINE_COMPILE") == "0", reason="ENGINE_COMPILE=0: the interpreted run")
def test_every_listed_module_runs_compiled() -> None:
    listed = _listed()
    assert listed and sorted(listed) == compiled.compiled(), "run `make compiled`"
    for name in listed:
        assert importlib.import_module(name).__file__.endswith(".so"), name  # type: ignore[union-attr]
    assert compiled.loaded_compiled() == sorted(listed)  # the group's shared library is not a module


def test_the_server_says_at_start_up_what_runs_compiled(caplog: pytest.LogCaptureFixture) -> None:
    from engine.server import _log_compiled

    for name in _listed():
        importlib.import_module(name)
    with caplog.at_level(logging.INFO, logger="engine.server"):
        _log_compiled()
    if os.environ.get("ENGINE_COMPILE") == "0":
        assert "hot path interpreted (no compiled modules)" in caplog.text
    else:
        assert f"hot path compiled: {len(_listed())} modules (mypyc)" in caplog.text
    assert "older than the sources" not in caplog.text


@pytest.mark.skipif(os.environ.get("ENGINE_COMPILE") != "0", reason="the compiled run")
def test_the_interpreted_run_has_no_extensions() -> None:
    assert compiled.compiled() == []


def test_an_edited_source_makes_the_extensions_stale(tmp_path: Path) -> None:
    if not compiled.compiled():
        assert compiled.stale() == []
        return
    source = ROOT / "engine" / "errors.py"
    before = source.stat()
    try:
        later = time.time() + 60
        os.utime(source, (later, later))
        assert sorted(compiled.stale()) == compiled.compiled()
    finally:
        os.utime(source, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert compiled.stale() == []
