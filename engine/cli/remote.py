"""The client commands, run against a server: ``infer``, ``explain``, ``list``, ``describe``, ``reload``.

Each connects to ``--url``; ``ENGINE_TOKEN`` is sent as a bearer token and ``--ca`` turns on TLS. A
remote error prints as ``engine COMMAND: CODE: message`` and exits 1.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from engine.protocol.client import EngineClient

DEFAULT_URL = "127.0.0.1:8001"
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
    cmd.add_argument("--url", default=DEFAULT_URL)
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


def _jsonable(array: np.ndarray) -> object:
    if array.dtype == object:
        return [v.decode(errors="replace") if isinstance(v, bytes) else v for v in array.reshape(-1)]
    return array.tolist()


@_remote
def _infer(args: argparse.Namespace) -> int:
    client = connect(args)
    request = client.build_request(args.graph, _parse_inputs(args.input), args.version)
    outputs = client.infer(request)
    print(json.dumps({name: _jsonable(a) for name, a in outputs.items()}, indent=2))
    return 0


@_remote
def _explain(args: argparse.Namespace) -> int:
    from engine.protocol.client import decode_outputs
    from engine.protocol.generated.inference import grpc_service_pb2 as pb

    client = connect(args)
    request = client.build_request(args.graph, _parse_inputs(args.input), args.version)
    explained = client.explain(request, show_redacted=args.show_redacted)
    took = f"{explained.total_ns / 1e3:.1f} µs"
    print(f"graph {explained.graph} version {explained.version}: {took} in the executor\n")
    print(f"{'node':<16} {'kind':<10} {'start µs':>9} {'took µs':>9} {'rows':>5}  outputs / branch")
    for node in explained.nodes:
        shown = []
        if node.branch_rows:
            shown.append(", ".join(f"{k}: {v} row(s)" for k, v in sorted(node.branch_rows.items())))
        for tensor in node.outputs:
            values = decode_outputs(pb.ModelInferResponse(outputs=[tensor]))[tensor.name]
            status = node.feature_status.get(tensor.name)
            why = f" ({status})" if status else ""  # a features node: where the values came from
            shown.append(f"{tensor.name}={np.array2string(values, threshold=6, precision=4)}{why}")
        shown.extend(
            f"{name.split('.', 1)[-1]}=<redacted>"
            for name in node.redacted
            if name.startswith(f"{node.name}.")
        )
        error = f"  ERROR {node.error}" if node.error else ""
        print(
            f"{node.name:<16} {node.kind:<10} {node.start_ns / 1e3:>9.1f} {node.duration_ns / 1e3:>9.1f} "
            f"{node.rows:>5}  {'; '.join(shown).replace(chr(10), ' ')}{error}"
        )
    outputs = decode_outputs(explained.response)
    print("\noutputs:", json.dumps({name: _jsonable(a) for name, a in outputs.items()}))
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
    from google.protobuf import json_format

    from engine.protocol.generated.engine.v1 import engine_pb2 as epb

    response = connect(args).admin(
        "DescribeGraph", epb.DescribeGraphRequest(name=args.names[0]), epb.DescribeGraphResponse
    )
    print(json_format.MessageToJson(response, preserving_proto_field_name=True))
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
