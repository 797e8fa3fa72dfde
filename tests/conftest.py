from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GRAPHS = ROOT / "graphs"


@pytest.fixture(scope="session")
def example_graphs() -> Path:
    """The repository's example graphs, with their models built (idempotent)."""
    subprocess.run([sys.executable, str(GRAPHS / "build_models.py")], check=True, capture_output=True)
    return GRAPHS
