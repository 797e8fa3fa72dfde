"""The ``engine`` command: serve, validate, graph draw, infer, explain, list, describe, reload, logs,
features and shadow. Each command's module adds its own subparser; this one only dispatches."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from engine.cli import features, graph, init, lineage, logs, monitor, remote, rollout, serve, shadow

DESCRIPTION = (
    "Serve graphs of ONNX models over gRPC; check and draw them; talk to a running server; "
    "read request logs, feature sources and shadow comparisons."
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``engine`` command line; the exit code (2 for usage errors, 130 on Ctrl-C)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    try:
        code = int(args.run(args) or 0)
        sys.stdout.flush()
        return code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `engine logs query | head`: the reader left; stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush does not fail again
        return 141  # as a shell reports a command ended by SIGPIPE


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: every command module's subparser."""
    parser = argparse.ArgumentParser(prog="engine", description=DESCRIPTION)
    sub = parser.add_subparsers(metavar="COMMAND")
    for command in (serve, graph, init, remote, logs, features, shadow, monitor, lineage, rollout):
        command.add_parser(sub)
    return parser
