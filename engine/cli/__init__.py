"""The ``engine`` command line (``engine`` console script, ``python -m engine.cli``)."""

from engine.cli.command import build_parser, main

__all__ = ["build_parser", "main"]
