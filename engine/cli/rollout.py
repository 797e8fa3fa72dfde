"""``engine rollout``: a graph's progressive rollout on a running server (the Rollout RPC).

engine rollout status fraud      # versions, step, state, the reason, the step's numbers, events
engine rollout pause fraud       # the candidate stops taking traffic; the step's numbers are kept
engine rollout resume fraud
engine rollout promote fraud     # the candidate becomes the latest version now
engine rollout abort fraud       # roll back now: the serving version keeps every request
"""

from __future__ import annotations

import argparse
import sys

from engine.cli.remote import add_connection_arguments, connect

ACTIONS = ("status", "pause", "resume", "promote", "abort")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    rollout = sub.add_parser(
        "rollout", help="a graph's progressive rollout: status, pause, resume, promote, abort"
    )
    rollout.add_argument("action", choices=ACTIONS)
    rollout.add_argument("graph", help="the graph whose rollout to show or change")
    rollout.add_argument("--format", choices=("table", "json"), default="table")
    add_connection_arguments(rollout)
    rollout.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    from engine.protocol.client import RemoteError
    from engine.protocol.generated.engine.v1 import engine_pb2 as epb

    client = connect(args)
    try:
        response = client.admin(
            "Rollout", epb.RolloutRequest(graph=args.graph, action=args.action), epb.RolloutResponse
        )
    except RemoteError as exc:
        print(f"engine rollout {args.action}: {exc.code}: {exc.details}", file=sys.stderr)
        return 1
    finally:
        client.close()
    print(response.json if args.format == "json" else response.table)
    return 0
