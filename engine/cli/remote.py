"""The client commands, run against a server: ``infer``, ``explain``, ``list``, ``describe``, ``reload``.

Each connects to ``--url`` (default: ``ENGINE_URL``, else 127.0.0.1:8001); ``ENGINE_TOKEN`` is sent as
a bearer token and ``--ca`` turns on TLS. A remote error prints as ``engine COMMAND: CODE: message``
and exits 1.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from engine.cli import tables

if TYPE_CHECKING:
    from engine.protocol.client import EngineClient

DEFAULT_URL = "127.0.0.1:8001"
URL_VARIABLE = "ENGINE_URL"
Command = Callable[[argparse.Namespace], int]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the client commands to the ``engine`` command's subparsers."""
    for name, helptext, runner in (
        ("infer", "send one request and print the outputs", _infer),
        ("explain", "send one request and print each node's outputs and timing", _explain),
    ):
        cmd = sub.add_parser(name, help=helptext)
        cmd.add_argument("graph")
        cmd.add_argument(
            "--input",
            "-i",
            action="append",
            default=[],
            metavar="NAME=JSON",
            help="an input as JSON, e.g. amount=[[1200.0]]; repeat per input",
        )
        cmd.add_argument("--version", default="")
        if name == "explain":
            cmd.add_argument(
                "--show-redacted",
                action="store_true",
                help="also show the tensors the graph's logging policy redacts or hashes (admin token)",
            )
        add_connection_arguments(cmd)
        cmd.set_defaults(run=runner)
    for name, helptext, runner in (
        ("list", "list the graphs a server serves", _list),
        ("describe", "describe one served graph", _describe),
        ("reload", "re-read graphs from disk on a running server", _reload),
    ):
        cmd = sub.add_parser(name, help=helptext)
        if name != "list":
            cmd.add_argument("names", nargs="*" if name == "reload" else 1)
        add_connection_arguments(cmd)
        cmd.set_defaults(run=runner)


def add_connection_arguments(cmd: argparse.ArgumentParser) -> None:
    """``--url`` and ``--ca``: where the server is and whether to trust it over TLS."""
    cmd.add_argument(
        "--url",
        default=os.environ.get(URL_VARIABLE) or DEFAULT_URL,
        help=f"the server's gRPC address (default: {URL_VARIABLE}, else {DEFAULT_URL})",
    )
    cmd.add_argument("--ca", help="PEM CA to trust: connect with TLS (token: ENGINE_TOKEN)")


def connect(args: argparse.Namespace) -> EngineClient:
    """A client for ``--url``; ``ENGINE_TOKEN`` is sent as a bearer token, ``--ca`` turns on TLS."""
    from engine.protocol.client import EngineClient

    return EngineClient(args.url, token=os.environ.get("ENGINE_TOKEN") or None, ca_file=args.ca)


def _remote(fn: Command) -> Command:
    """Run a client call, printing a remote error as `CODE: message` with exit code 1."""

    @functools.wraps(fn)
    def wrapped(args: argparse.Namespace) -> int:
        from engine.protocol.client import RemoteError

        try:
            return fn(args)
        except RemoteError as exc:
            print(f"engine {fn.__name__.strip('_')}: {exc}", file=sys.stderr)
            return 1
        except ValueError as exc:
            print(f"engine: {exc}", file=sys.stderr)
            return 2

    return wrapped


def _parse_inputs(items: Sequence[str]) -> dict[str, object]:
    values: dict[str, object] = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep:
            raise SystemExit(f"--input {item!r}: expected NAME=JSON")
        try:
            values[name] = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SystemExit(f"--input {name}: not JSON ({exc.msg})") from None
    return values


@_remote
def _infer(args: argparse.Namespace) -> int:
    client = connect(args)
    request = client.build_request(args.graph, _parse_inputs(args.input), args.version)
    outputs = client.infer(request)
    print(tables.outputs_json(outputs))
    return 0


@_remote
def _explain(args: argparse.Namespace) -> int:
    from engine.protocol.client import decode_outputs
    from engine.protocol.generated.inference import grpc_service_pb2 as pb

    client = connect(args)
    request = client.build_request(args.graph, _parse_inputs(args.input), args.version)
    explained = client.explain(request, show_redacted=args.show_redacted)
    took = tables.duration(explained.total_ns)
    print(f"graph {explained.graph} version {explained.version}: {took} in the executor\n")
    rows = [
        tables.NodeRow(
            name=node.name,
            kind=node.kind,
            start_ns=node.start_ns,
            duration_ns=node.duration_ns,
            rows=node.rows,
            outputs={
                t.name: decode_outputs(pb.ModelInferResponse(outputs=[t]))[t.name] for t in node.outputs
            },
            redacted=tuple(n.split(".", 1)[-1] for n in node.redacted if n.startswith(f"{node.name}.")),
            branch_rows=dict(node.branch_rows),
            feature_status=dict(node.feature_status),
            error=node.error,
        )
        for node in explained.nodes
    ]
    print(tables.node_table(rows))
    print("\noutputs:", tables.outputs_json(decode_outputs(explained.response)))
    return 0


@_remote
def _list(args: argparse.Namespace) -> int:
    from engine.protocol.generated.engine.v1 import engine_pb2 as epb

    response = connect(args).admin("ListGraphs", epb.ListGraphsRequest(), epb.ListGraphsResponse)
    print(f"{'graph':<20} {'state':<12} {'versions':<10} error")
    for g in response.graphs:
        print(f"{g.name:<20} {g.state:<12} {','.join(g.versions):<10} {g.last_error}")
    return 0


@_remote
def _describe(args: argparse.Namespace) -> int:
    from engine.protocol.client import plain
    from engine.protocol.generated.engine.v1 import engine_pb2 as epb

    response = connect(args).admin(
        "DescribeGraph", epb.DescribeGraphRequest(name=args.names[0]), epb.DescribeGraphResponse
    )
    print(json.dumps(plain(response), indent=2))
    return 0


@_remote
def _reload(args: argparse.Namespace) -> int:
    from engine.protocol.generated.engine.v1 import engine_pb2 as epb

    response = connect(args).admin(
        "ReloadGraphs", epb.ReloadGraphsRequest(names=args.names), epb.ReloadGraphsResponse
    )
    for r in response.results:
        print(f"{r.name} {r.version or '-'}: {r.action}{' — ' + r.error if r.error else ''}")
    return 1 if any(r.action == "failed" for r in response.results) else 0
