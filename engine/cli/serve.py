"""``engine serve``: resolve the settings once, then run one server process or the ``--workers`` fleet.

Its options are derived from the setting declarations (``engine.config``), so every setting that has
a flag is here, and the resolved settings travel whole to each worker (``ServeSettings.to_json``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from engine.config import ServeSettings, add_setting_flags, flag_values


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``serve`` to the ``engine`` command's subparsers."""
    serve = sub.add_parser(
        "serve",
        help="serve every graph folder under DIR over gRPC",
        description="Serve every graph folder under DIR over gRPC. Every setting: docs/configuration.md.",
    )
    add_setting_flags(serve)
    serve.add_argument(
        "--config",
        type=Path,
        help="YAML settings file (ENGINE_CONFIG; default: DIR/engine.yaml if it exists)",
    )
    serve.set_defaults(run=_serve)


def _serve(args: argparse.Namespace) -> int:
    try:
        settings = ServeSettings.from_env(config=args.config, **flag_values(args))
    except ValueError as exc:
        print(f"engine serve: {exc}", file=sys.stderr)
        return 2
    if not settings.graphs.is_dir():
        print(f"engine serve: {settings.graphs} is not a folder", file=sys.stderr)
        return 2
    if settings.workers > 1:
        if settings.port == 0:
            print("engine serve: --workers > 1 needs a fixed --port", file=sys.stderr)
            return 2
        from engine.logging_setup import setup_logging

        setup_logging(settings.log_level, settings.log_format)
        from engine.fleet.supervisor import run_supervisor

        return run_supervisor(settings)
    from engine.server import run

    try:
        run(settings)
    except ValueError as exc:  # a setting the server refused at start (request_log, tracing, …)
        print(f"engine serve: {exc}", file=sys.stderr)
        return 2
    return 0
