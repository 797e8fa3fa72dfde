"""The ``engine`` command: serve, validate, infer, explain, draw, list, describe, reload."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from engine import features_cli, logs_cli, shadow_cli
from engine.config import ServeSettings

DEFAULT_URL = "127.0.0.1:8001"


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="engine", description=__doc__)
    sub = parser.add_subparsers(metavar="COMMAND")

    serve = sub.add_parser("serve", help="serve every graph folder under DIR over gRPC")
    serve.add_argument("graphs", type=Path, nargs="?", help="folder of graph folders (default: ./graphs)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--workers", type=int, help="processes sharing the port (default: one per core)")
    serve.add_argument("--grace", dest="grace_s", type=float, help="seconds to drain on SIGTERM")
    serve.add_argument("--drain-delay", dest="drain_delay_s", type=float)
    serve.add_argument("--max-message-bytes", type=int)
    serve.add_argument("--max-elements", type=int)
    serve.add_argument("--pool-threads", type=int)
    serve.add_argument("--no-uvloop", dest="uvloop", action="store_const", const=False)
    serve.add_argument("--log-level")
    serve.add_argument("--config", type=Path, help="YAML settings file (ENGINE_CONFIG)")
    serve.add_argument("--tls-cert", help="PEM certificate chain: serve TLS")
    serve.add_argument("--tls-key", help="PEM private key for --tls-cert")
    serve.add_argument("--tls-client-ca", help="PEM CA bundle: require client certificates (mutual TLS)")
    serve.add_argument(
        "--auth-token-file", help="inference bearer tokens, one per line (or ENGINE_AUTH_TOKEN)"
    )
    serve.add_argument("--admin-token-file", help="admin bearer tokens, one per line (or ENGINE_ADMIN_TOKEN)")
    serve.add_argument("--max-concurrency", type=int, help="inference calls executing at once (0 = no limit)")
    serve.add_argument("--max-queue", type=int, help="inference calls allowed to wait for a slot")
    serve.add_argument("--shadow-concurrency", type=int, help="shadow candidate runs at once per process")
    serve.add_argument("--shadow-queue", type=int, help="shadow runs allowed to wait before being shed")
    serve.add_argument(
        "--max-queue-wait", dest="max_queue_wait_s", type=float, help="longest wait for a slot (s)"
    )
    serve.add_argument(
        "--request-log",
        type=Path,
        metavar="DIR",
        help="write request-log records as JSON Lines into DIR (other sinks: engine.yaml request_log)",
    )
    serve.add_argument(
        "--reload-interval",
        dest="reload_interval_s",
        type=float,
        help="seconds between checks of the graph folders for changes (0 = off)",
    )
    serve.add_argument(
        "--max-connection-age",
        dest="max_connection_age_s",
        type=float,
        help="seconds after which client connections are closed to re-balance (0 = never)",
    )
    serve.add_argument("--metrics-port", type=int, help="Prometheus /metrics port; 0 = free port, -1 = off")
    serve.add_argument("--metrics-host", help="address for /metrics (default: --host)")
    serve.add_argument("--trace-exporter", choices=("none", "console", "otlp", "discard"))
    serve.add_argument("--trace-endpoint", help="OTLP gRPC collector address, e.g. otel-collector:4317")
    serve.add_argument("--trace-sample-ratio", type=float, help="share of root requests traced")
    serve.set_defaults(run=_serve)

    validate = sub.add_parser("validate", help="check graphs and print every problem with file:line:col")
    validate.add_argument(
        "paths", type=Path, nargs="+", help="graph.yaml files, graph folders or repositories"
    )
    validate.add_argument(
        "--config",
        type=Path,
        help="engine.yaml declaring the feature sources graphs name (default: ENGINE_CONFIG, else an "
        "engine.yaml in or above the graph folders)",
    )
    validate.set_defaults(run=_validate)

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
        cmd.add_argument("--url", default=DEFAULT_URL)
        cmd.add_argument("--ca", help="PEM CA to trust: connect with TLS (token: ENGINE_TOKEN)")
        cmd.set_defaults(run=runner)

    logs_cli.add_parser(sub)
    features_cli.add_parser(sub)
    shadow_cli.add_parser(sub)

    graph = sub.add_parser("graph", help="work with one graph locally")
    graph_sub = graph.add_subparsers(metavar="ACTION")
    draw = graph_sub.add_parser("draw", help="draw a graph as mermaid, dot or png")
    draw.add_argument("graph", help="a graph folder, a graph.yaml, or a graph name under --graphs")
    draw.add_argument("--graphs", type=Path, default=Path("graphs"))
    draw.add_argument("--format", choices=("mermaid", "dot", "png"), default="mermaid")
    draw.add_argument("--output", "-o", type=Path, help="file to write (required for png)")
    draw.add_argument("--config", type=Path, help="engine.yaml declaring feature sources")
    draw.set_defaults(run=_draw)

    for name, helptext, runner in (
        ("list", "list the graphs a server serves", _list),
        ("describe", "describe one served graph", _describe),
        ("reload", "re-read graphs from disk on a running server", _reload),
    ):
        cmd = sub.add_parser(name, help=helptext)
        if name != "list":
            cmd.add_argument("names", nargs="*" if name == "reload" else 1)
        cmd.add_argument("--url", default=DEFAULT_URL)
        cmd.add_argument("--ca", help="PEM CA to trust: connect with TLS (token: ENGINE_TOKEN)")
        cmd.set_defaults(run=runner)
    return parser


def _serve(args: argparse.Namespace) -> int:
    overrides = {
        k: getattr(args, k, None)
        for k in (
            "host",
            "port",
            "workers",
            "grace_s",
            "drain_delay_s",
            "max_message_bytes",
            "max_elements",
            "pool_threads",
            "uvloop",
            "log_level",
            "metrics_port",
            "metrics_host",
            "reload_interval_s",
            "max_connection_age_s",
            "max_concurrency",
            "max_queue",
            "max_queue_wait_s",
            "shadow_concurrency",
            "shadow_queue",
            "tls_cert",
            "tls_key",
            "tls_client_ca",
            "auth_token_file",
            "admin_token_file",
            "trace_exporter",
            "trace_endpoint",
            "trace_sample_ratio",
        )
    }
    if args.request_log is not None:
        overrides["request_log"] = {"sink": "jsonl", "directory": str(args.request_log)}
    try:
        settings = ServeSettings.from_env(config=args.config, graphs=args.graphs, **overrides)
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
        import logging

        from engine.supervisor import supervise

        logging.basicConfig(
            level=settings.log_level.upper(),
            format="%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s",
        )
        worker_ports = _worker_metrics_ports(settings)
        if worker_ports:
            from engine.observability.merged_metrics import serve_merged

            host = settings.metrics_host or settings.host
            port = serve_merged(host, settings.metrics_port, worker_ports)
            logging.getLogger("engine.supervisor").info(
                "metrics of all workers on http://%s:%d/metrics", host, port
            )

        if settings.request_log:  # each worker writes its own files (their names carry the pid)
            os.environ["ENGINE_REQUEST_LOG"] = json.dumps(settings.request_log)
        if settings.feature_sources:  # static paths are absolute by now; credentials stay env names
            os.environ["ENGINE_FEATURE_SOURCES"] = json.dumps(settings.feature_sources)

        def argv(index: int) -> list[str]:
            own = (
                ["--metrics-host", "127.0.0.1", "--metrics-port", str(worker_ports[index])]
                if worker_ports
                else []
            )
            return [*_worker_argv(settings), *own]

        return supervise(argv, settings.workers, settings.grace_s, settings.drain_delay_s)
    from engine.server import run

    try:
        run(settings)
    except ValueError as exc:  # a setting the server refused at start (request_log, tracing, …)
        print(f"engine serve: {exc}", file=sys.stderr)
        return 2
    return 0


def _worker_metrics_ports(settings: ServeSettings) -> list[int]:
    """Loopback ports on which each worker serves its own metrics (the parent merges them)."""
    if settings.metrics_port < 0:
        return []
    import socket

    ports = []
    for _ in range(settings.workers):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            ports.append(probe.getsockname()[1])
    return ports


def _worker_argv(settings: ServeSettings) -> list[str]:
    """``engine serve`` arguments for one worker: every resolved setting, so none is lost."""
    argv = [
        "serve",
        str(settings.graphs),
        "--workers",
        "1",
        "--host",
        settings.host,
        "--port",
        str(settings.port),
        "--grace",
        str(settings.grace_s),
        "--drain-delay",
        str(settings.drain_delay_s),
        "--max-message-bytes",
        str(settings.max_message_bytes),
        "--max-elements",
        str(settings.max_elements),
        "--pool-threads",
        str(settings.pool_threads),
        "--log-level",
        settings.log_level,
        "--trace-exporter",
        settings.trace_exporter,
        "--trace-endpoint",
        settings.trace_endpoint,
        "--trace-sample-ratio",
        str(settings.trace_sample_ratio),
        "--reload-interval",
        str(settings.reload_interval_s),
        "--max-connection-age",
        str(settings.max_connection_age_s),
        "--max-concurrency",
        str(settings.max_concurrency),
        "--max-queue",
        str(settings.max_queue),
        "--max-queue-wait",
        str(settings.max_queue_wait_s),
        "--shadow-concurrency",
        str(settings.shadow_concurrency),
        # Off unless the parent hands this worker a loopback port of its own (appended after):
        # never the configured port, which the parent's merged endpoint holds.
        "--metrics-port",
        "-1",
        "--shadow-queue",
        str(settings.shadow_queue),
    ]
    for flag, value in (
        ("--tls-cert", settings.tls_cert),
        ("--tls-key", settings.tls_key),
        ("--tls-client-ca", settings.tls_client_ca),
        ("--auth-token-file", settings.auth_token_file),
        ("--admin-token-file", settings.admin_token_file),
    ):
        if value:  # paths only: tokens themselves reach workers through their environment, never argv
            argv += [flag, value]
    return argv if settings.uvloop else [*argv, "--no-uvloop"]


def _graph_files(paths: Sequence[Path]) -> list[Path]:
    from engine.graph import find_graph_files

    files: list[Path] = []
    for path in paths:
        if path.is_file():
            files.append(path)
        elif (path / "graph.yaml").is_file():
            files.append(path / "graph.yaml")
        elif path.is_dir():
            files.extend(find_graph_files(path))
        else:
            raise FileNotFoundError(path)
    return files


def _validate(args: argparse.Namespace) -> int:
    from engine.graph import check_graph
    from engine.runtimes.onnx import OnnxRuntimeFactory

    try:
        files = _graph_files(args.paths)
    except FileNotFoundError as exc:
        print(f"engine validate: no such file or folder: {exc}", file=sys.stderr)
        return 2
    if not files:
        print("engine validate: no graph.yaml found", file=sys.stderr)
        return 2
    try:
        catalog = features_cli.load_catalog(features_cli.find_config(args.config, args.paths), args.paths)
    except ValueError as exc:
        print(f"engine validate: {exc}", file=sys.stderr)
        return 2
    runtimes = OnnxRuntimeFactory(max_workers=1)
    errors = warnings = 0
    try:
        for file in files:
            diagnostics = check_graph(
                file.read_text(),
                filename=str(file),
                graph_dir=file.parent,
                runtimes=runtimes,
                features=catalog,
            )
            for diagnostic in diagnostics:
                print(diagnostic)
            file_errors = sum(d.severity == "error" for d in diagnostics)
            errors += file_errors
            warnings += len(diagnostics) - file_errors
            if not file_errors:
                print(f"{file}: ok")
    finally:
        runtimes.close()
        features_cli.close_catalog(catalog)
    print(f"{len(files)} graph(s) checked: {errors} error(s), {warnings} warning(s)")
    return 1 if errors else 0


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


def _client(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """A client for ``--url``; ``ENGINE_TOKEN`` is sent as a bearer token, ``--ca`` turns on TLS."""
    from engine.protocol.client import EngineClient

    return EngineClient(args.url, token=os.environ.get("ENGINE_TOKEN") or None, ca_file=args.ca)


def _remote(fn):  # type: ignore[no-untyped-def]
    """Run a client call, printing a remote error as `CODE: message` with exit code 1."""
    from engine.protocol.client import RemoteError

    def wrapped(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except RemoteError as exc:
            print(f"engine {args.run.__name__.strip('_')}: {exc}", file=sys.stderr)
            return 1
        except ValueError as exc:
            print(f"engine: {exc}", file=sys.stderr)
            return 2

    wrapped.__name__ = fn.__name__
    return wrapped


def _jsonable(array: np.ndarray) -> object:
    if array.dtype == object:
        return [v.decode(errors="replace") if isinstance(v, bytes) else v for v in array.reshape(-1)]
    return array.tolist()


@_remote
def _infer(args: argparse.Namespace) -> int:
    client = _client(args)
    request = client.build_request(args.graph, _parse_inputs(args.input), args.version)
    outputs = client.infer(request)
    print(json.dumps({name: _jsonable(a) for name, a in outputs.items()}, indent=2))
    return 0


@_remote
def _explain(args: argparse.Namespace) -> int:
    from engine.protocol.client import decode_outputs
    from engine.protocol.generated.inference import grpc_service_pb2 as pb

    client = _client(args)
    request = client.build_request(args.graph, _parse_inputs(args.input), args.version)
    explained = client.explain(request)
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
        error = f"  ERROR {node.error}" if node.error else ""
        print(
            f"{node.name:<16} {node.kind:<10} {node.start_ns / 1e3:>9.1f} {node.duration_ns / 1e3:>9.1f} "
            f"{node.rows:>5}  {'; '.join(shown).replace(chr(10), ' ')}{error}"
        )
    outputs = decode_outputs(explained.response)
    print("\noutputs:", json.dumps({name: _jsonable(a) for name, a in outputs.items()}))
    return 0


def _draw(args: argparse.Namespace) -> int:
    from engine.errors import GraphInvalid
    from engine.graph import draw, load_graph
    from engine.runtimes.onnx import OnnxRuntimeFactory

    path = Path(args.graph)
    if not path.exists():
        path = args.graphs / args.graph
    if path.is_dir():
        path = path / "graph.yaml"
    if not path.is_file():
        print(f"engine graph draw: no graph at {path}", file=sys.stderr)
        return 2
    try:
        catalog = features_cli.load_catalog(features_cli.find_config(args.config, [path]), [path])
    except ValueError as exc:
        print(f"engine graph draw: {exc}", file=sys.stderr)
        return 2
    runtimes = OnnxRuntimeFactory(max_workers=1, warmup_runs=1)
    try:
        graph = load_graph(path, runtimes, catalog)
    except GraphInvalid as exc:
        for diagnostic in exc.diagnostics:
            print(diagnostic, file=sys.stderr)
        return 1
    finally:
        runtimes.close()
        features_cli.close_catalog(catalog)
    text = draw.to_mermaid(graph.plan) if args.format == "mermaid" else draw.to_dot(graph.plan)
    if args.format == "png":
        dot = shutil.which("dot")
        if dot is None:
            print(
                "engine graph draw: --format png needs graphviz's `dot` (apt-get install graphviz)",
                file=sys.stderr,
            )
            return 2
        if args.output is None:
            print("engine graph draw: --format png needs --output FILE", file=sys.stderr)
            return 2
        subprocess.run([dot, "-Tpng", "-o", str(args.output)], input=text.encode(), check=True)
        print(f"wrote {args.output}")
        return 0
    if args.output:
        args.output.write_text(text)
        print(f"wrote {args.output}")
    else:
        print(text)
    return 0


@_remote
def _list(args: argparse.Namespace) -> int:
    from engine.protocol.generated.engine.v1 import engine_pb2 as epb

    response = _client(args).admin("ListGraphs", epb.ListGraphsRequest(), epb.ListGraphsResponse)
    print(f"{'graph':<20} {'state':<12} {'versions':<10} error")
    for g in response.graphs:
        print(f"{g.name:<20} {g.state:<12} {','.join(g.versions):<10} {g.last_error}")
    return 0


@_remote
def _describe(args: argparse.Namespace) -> int:
    from google.protobuf import json_format

    from engine.protocol.generated.engine.v1 import engine_pb2 as epb

    response = _client(args).admin(
        "DescribeGraph", epb.DescribeGraphRequest(name=args.names[0]), epb.DescribeGraphResponse
    )
    print(json_format.MessageToJson(response, preserving_proto_field_name=True))
    return 0


@_remote
def _reload(args: argparse.Namespace) -> int:
    from engine.protocol.generated.engine.v1 import engine_pb2 as epb

    response = _client(args).admin(
        "ReloadGraphs", epb.ReloadGraphsRequest(names=args.names), epb.ReloadGraphsResponse
    )
    for r in response.results:
        print(f"{r.name} {r.version or '-'}: {r.action}{' — ' + r.error if r.error else ''}")
    return 1 if any(r.action == "failed" for r in response.results) else 0


if __name__ == "__main__":
    sys.exit(main())
