from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import hypothesis  # noqa: F401 - imported up front, see below
import pytest

# hypothesis's pytest plugin imports hypothesis in its end-of-session summary when no test did.
# On CPython 3.11.7 compiling a module that late can fail with "SystemError: AST constructor
# recursion depth mismatch" after some test runs (seen after tests/integration/test_http.py then
# test_http_serving.py), turning a passing run into exit code 1; imported here, it never compiles late.

ROOT = Path(__file__).resolve().parents[1]
GRAPHS = ROOT / "graphs"


def pytest_sessionstart(session: pytest.Session) -> None:
    """Refuse to test compiled modules built from older sources: they are not the code under test."""
    from engine import compiled

    stale = compiled.stale()
    if stale:
        pytest.exit(
            f"{len(stale)} compiled modules (e.g. {stale[0]}) are older than the engine's sources: "
            "run `make compiled`, or `make interpreted` to test the sources as they are",
            returncode=2,
        )


@pytest.fixture(scope="session")
def example_graphs() -> Path:
    """The repository's example graphs, with their models built (idempotent)."""
    subprocess.run([sys.executable, str(GRAPHS / "build_models.py")], check=True, capture_output=True)
    return GRAPHS
