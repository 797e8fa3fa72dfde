"""The ``loadtest`` console script: says how to install the load tool's extra when it is missing.

The server's image and a plain ``pip install graph-engine`` carry no load-test dependencies;
``pip install 'graph-engine[loadtest]'`` adds them (hdrhistogram for the latency histograms,
matplotlib for the report's plots).
"""

from __future__ import annotations

import importlib.util
import sys

NEEDS = {"hdrh": "hdrhistogram", "matplotlib": "matplotlib"}  # import name -> package


def _installed(module: str) -> bool:
    if module in sys.modules:  # already imported (or blocked, as None)
        return sys.modules[module] is not None
    return importlib.util.find_spec(module) is not None


def main(argv: list[str] | None = None) -> int:
    missing = [package for module, package in NEEDS.items() if not _installed(module)]
    if missing:
        print(
            f"loadtest: {', '.join(missing)} not installed; the load tool is an extra: "
            "pip install 'graph-engine[loadtest]'",
            file=sys.stderr,
        )
        return 2
    from loadtest.cli import main as run

    return run(argv)
