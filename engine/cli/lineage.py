"""``engine lineage``: which served graphs use a model or a feature field, and what produced a request.

    engine lineage model 3f5a…                   a model digest (or its first 8+ hex digits)
    engine lineage model models:/fraud-deep       any version of a registered model
    engine lineage model models:/fraud-deep/3     one version (also matched when an alias resolved to it)
    engine lineage model deep.onnx                a file of a graph folder, by its path there
    engine lineage feature users.txn_24h          a feature source's field (or a whole source: users)
    engine lineage request REQUEST_ID --log DIR   graph, version, models and status of one logged request

The first two ask a running server (``--url``) about every version it serves (ListGraphs and
DescribeGraph), so the answer is what serves now; ``request`` reads the request log's files.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from engine.cli.remote import add_connection_arguments, connect

if TYPE_CHECKING:
    from engine.protocol.generated.engine.v1 import engine_pb2 as epb

_DIGEST = re.compile(r"^(sha256:)?[0-9a-fA-F]{8,64}$")


@dataclass(frozen=True)
class Use:
    graph: str
    version: str
    node: str
    kind: str
    model: str  # as the graph names it (file, reference) or the feature source
    source: str  # what a reference resolved to; the fields read, for a features node
    sha256: str


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    lineage = sub.add_parser(
        "lineage", help="which graphs use a model or feature field; what produced a request"
    )
    actions = lineage.add_subparsers(metavar="WHAT")
    for name, helptext in (
        (
            "model",
            "graphs, versions and nodes serving a model: digest, models:/NAME[/VERSION|@ALIAS] or file",
        ),
        ("feature", "graphs, versions and nodes reading a feature source's field: SOURCE.FIELD or SOURCE"),
    ):
        cmd = actions.add_parser(name, help=helptext)
        cmd.add_argument("query")
        cmd.add_argument("--json", action="store_true", help="one JSON object per line")
        add_connection_arguments(cmd)
        cmd.set_defaults(run=_uses, what=name)
    request = actions.add_parser("request", help="what produced one logged request (from the request log)")
    request.add_argument("request_id")
    request.add_argument("--log", required=True, help="the request log's folder or a file in it")
    request.set_defaults(run=_request)


def model_matches(query: str, node: epb.Node) -> bool:
    """Whether model node ``node`` serves the model ``query`` names (see the module docstring)."""
    if not node.model_sha256:
        return False
    if _DIGEST.match(query):
        return node.model_sha256.startswith(query.lower().removeprefix("sha256:"))
    named = {node.model_path, node.model_source}
    if query in named:
        return True
    if query.startswith("models:/") and "/" not in query[len("models:/") :] and "@" not in query:
        return any(n.startswith((f"{query}/", f"{query}@")) for n in named if n)
    return False


def feature_matches(query: str, node: epb.Node) -> bool:
    if node.kind != "features":
        return False
    source, _, field = query.partition(".")
    if node.detail.partition(":")[0] != source:
        return False
    return not field or any(t.name == field for t in node.outputs)


def find_uses(what: str, query: str, graphs: Iterable[epb.DescribeGraphResponse]) -> list[Use]:
    match = model_matches if what == "model" else feature_matches
    found = []
    for graph in graphs:
        for node in graph.nodes:
            if match(query, node):
                model = node.model_path if what == "model" else node.detail.partition(":")[0]
                source = node.model_source if what == "model" else ",".join(t.name for t in node.outputs)
                found.append(
                    Use(graph.name, graph.version, node.name, node.kind, model, source, node.model_sha256)
                )
    return found


def _served(args: argparse.Namespace) -> list[epb.DescribeGraphResponse]:
    from engine.protocol.generated.engine.v1 import engine_pb2 as epb

    client = connect(args)
    listed = client.admin("ListGraphs", epb.ListGraphsRequest(), epb.ListGraphsResponse)
    described = []
    for graph in listed.graphs:
        for version in graph.versions:
            request = epb.DescribeGraphRequest(name=graph.name, version=version)
            described.append(client.admin("DescribeGraph", request, epb.DescribeGraphResponse))
    return described


def _uses(args: argparse.Namespace) -> int:
    from engine.protocol.client import RemoteError

    try:
        uses = find_uses(args.what, args.query, _served(args))
    except RemoteError as exc:
        print(f"engine lineage: {exc}", file=sys.stderr)
        return 1
    if args.json:
        for use in uses:
            print(json.dumps(asdict(use)))
        return 0 if uses else 1
    if not uses:
        print(f"no served graph uses {args.what} {args.query!r}")
        return 1
    second = "resolved to" if args.what == "model" else "fields"
    print(f"{'graph':<20} {'version':<8} {'node':<16} {args.what:<40} {second:<36} sha256")
    for u in uses:
        print(
            f"{u.graph:<20} {u.version:<8} {u.node:<16} {u.model:<40} {u.source or '-':<36} {u.sha256[:16]}"
        )
    return 0


def _request(args: argparse.Namespace) -> int:
    from engine.observability.log_reader import read_records

    try:
        record = next((r for r in read_records(args.log) if r.get("id") == args.request_id), None)
    except OSError as exc:
        print(f"engine lineage: cannot read {args.log}: {exc.strerror}", file=sys.stderr)
        return 2
    if record is None:
        print(f"request {args.request_id!r} is not in the request log at {args.log}", file=sys.stderr)
        return 1
    sources = record.get("model_sources", {})
    print(f"request {record['id']} at {record.get('time', '?')}: status {record.get('status', '?')}")
    print(
        f"graph {record.get('graph')} version {record.get('version')}  trace {record.get('trace_id') or '-'}"
    )
    print(f"{'node':<16} {'sha256':<64}  source")
    for node, digest in sorted(record.get("models", {}).items()):
        print(f"{node:<16} {digest:<64}  {sources.get(node, '(file in the graph folder)')}")
    return 0
