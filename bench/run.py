"""`make bench`: throughput, latency and server CPU of the engine against bare grpc.aio
floors, all measured in the same run on the same machine.

Each server runs in its own process pinned to one core; the load generator runs
pinned to another (when the machine has two). Every scenario is driven closed-loop
at concurrency 1 (latency) and 16 (throughput). Results print as a table with
ratios to the floors and are written to bench/results/<timestamp>.json.

The one-model graph is also driven at concurrency 64 with and without dynamic batching
(``bench/batching.py``), and once under ``--workers 2`` for the resident memory of each worker
(both workers share the server core: that row is about memory, not speed). RSS is
sampled after each measurement, i.e. in steady state.

The one-model graph is also driven through the other front doors: ``ModelStreamInfer`` (one
stream per caller, ``bench.load --mode stream``) and HTTP/REST with JSON and with binary tensor
data (one keep-alive connection per caller, ``bench.load_http``); the report gives each as a
ratio to gRPC unary.

Last, ``bench.features`` compares a ``features`` node's cost per request with a bare redis-py
pipeline doing the same read (needs the Redis on 127.0.0.1:6379, as the tests do).

The flood scenarios (``bench/flood.py``) check that a 16x flood is shed early enough.

Environment: BENCH_SECONDS (per measurement, default 5), BENCH_ONLY (comma-separated
scenario names; ``features`` for that part), BENCH_CONCURRENCY (default "1,16").
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import yaml

from bench import batching, flood, load_http, shadows
from engine.protocol.generated.inference import grpc_service_pb2 as pb

ROOT = Path(__file__).resolve().parents[1]
MLP = ROOT / "bench" / "models" / "mlp32.onnx"
SECONDS = float(os.environ.get("BENCH_SECONDS", "5"))
CONCURRENCY = [int(c) for c in os.environ.get("BENCH_CONCURRENCY", "1,16").split(",")]
WARMUP_S = 1.0  # bench.load's default warm-up
CORES = sorted(os.sched_getaffinity(0))
SERVER_CORE, CLIENT_CORE = (CORES[0], CORES[1]) if len(CORES) > 1 else (CORES[0], CORES[0])

CHAIN = """\
inputs:
  x: {datatype: FP32, shape: [-1, 32]}
nodes:
  mlp: {model: mlp32.onnx, inputs: {x: inputs.x}}
  t1: {transform: expr, expr: "mlp.y + 1"}
  t2: {transform: expr, expr: "t1 * 2"}
  t3: {transform: expr, expr: "t2 - 1"}
  t4: {transform: expr, expr: "t3 * 0.5"}
outputs:
  y: t4
"""
SINGLE = """\
inputs:
  x: {datatype: FP32, shape: [-1, 32]}
nodes:
  mlp: {model: mlp32.onnx, inputs: {x: inputs.x}}
outputs:
  y: mlp.y
"""


@dataclass(frozen=True)
class Scenario:
    name: str
    command: list[str]
    request: pb.ModelInferRequest
    note: str
    env: tuple[tuple[str, str], ...] = ()
    concurrency: tuple[int, ...] = ()  # default: BENCH_CONCURRENCY
    metrics_port: int = 0  # when set: read the server's batch sizes after each measurement
    driver: str = "unary"  # unary | stream (bench.load) | http (bench.load_http)
    http: bytes = b""  # the HTTP request bench.load_http sends (driver "http")
    refused: str = "retry"  # what a unary caller does when refused: retry at once, or back-off


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _request(model: str, tensors: dict[str, np.ndarray], request_id: str = "") -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model, id=request_id)
    for name, array in tensors.items():
        if array.dtype == object:  # BYTES: each element 4-byte little-endian length, then the bytes
            request.inputs.add(name=name, datatype="BYTES", shape=list(array.shape))
            request.raw_input_contents.append(b"".join(len(v).to_bytes(4, "little") + v for v in array.flat))
            continue
        request.inputs.add(name=name, datatype="FP32", shape=list(array.shape))
        request.raw_input_contents.append(array.astype(np.float32).tobytes())
    return request


def _fraud_sources(folder: Path) -> None:
    """``folder/engine.yaml`` with the fraud graph's ``users`` feature source (as graphs/engine.yaml)."""
    users = yaml.safe_load((ROOT / "graphs" / "engine.yaml").read_text())["feature_sources"]["users"]
    (folder / "engine.yaml").write_text(yaml.safe_dump({"feature_sources": {"users": users}}))


def _graphs_dir() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="bench-graphs-"))
    for name, text in (("mlp", SINGLE), ("chain", CHAIN)):
        (folder / name).mkdir()
        (folder / name / "graph.yaml").write_text(text)
        shutil.copy(MLP, folder / name / "mlp32.onnx")
    for name, (text, model) in batching.GRAPHS.items():
        (folder / name).mkdir()
        (folder / name / "graph.yaml").write_text(text)
        shutil.copy(model, folder / name / model.name)
    for name in ("fraud", "quickstart"):
        shutil.copytree(ROOT / "graphs" / name, folder / name)
    shadows.add_graphs(folder)
    _fraud_sources(folder)
    return folder


def _http_infer(model: str, x: np.ndarray, *, binary: bool) -> bytes:
    """A V2 REST infer request for ``x`` (FP32): JSON, or Triton's binary tensor data both ways."""
    tensor = {"name": "x", "datatype": "FP32", "shape": list(x.shape)}
    if not binary:
        body = json.dumps({"inputs": [{**tensor, "data": x.ravel().tolist()}]}).encode()
        return load_http.http_request(f"/v2/models/{model}/infer", body, {"Content-Type": "application/json"})
    data = x.astype("<f4").tobytes()
    header = json.dumps(
        {
            "inputs": [{**tensor, "parameters": {"binary_data_size": len(data)}}],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    return load_http.http_request(
        f"/v2/models/{model}/infer",
        header + data,
        {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(header))},
    )


def scenarios(
    graphs: Path, port: int, log_dir: Path | None = None, stalled_url: str = "", http_port: int = -1
) -> list[Scenario]:
    x = np.random.default_rng(0).normal(size=(1, 32)).astype(np.float32)
    wide = np.random.default_rng(1).normal(size=(1, 512)).astype(np.float32)
    floor = [sys.executable, "-m", "bench.floor_server", "--port", str(port), "--model", str(MLP)]
    engine = [
        sys.executable,
        "-m",
        "engine.cli",
        "serve",
        str(graphs),
        "--port",
        str(port),
        "--log-level",
        "WARNING",
        "--metrics-port",
        "0",
        "--workers",
        "1",  # one process on the server core (the default is one per usable core)
        "--http-port",
        str(http_port),
    ]
    batched_metrics = batching.free_port()
    user_id = np.array([[b"u0108"]], dtype=object)  # a row of graphs/fraud/users.csv
    fraud = {"amount": np.array([[1500.0]]), "user_id": user_id, "txn": np.array([[0.7, 1, 22]])}
    return [
        Scenario(
            "floor-echo", [*floor, "--mode", "echo"], _request("echo", {"x": x}), "bare grpc.aio, no model"
        ),
        Scenario(
            "floor-ort-inline",
            [*floor, "--mode", "ort-inline"],
            _request("mlp", {"x": x}),
            "bare grpc.aio + onnxruntime inline",
        ),
        Scenario(
            "floor-ort-pool",
            [*floor, "--mode", "ort-pool"],
            _request("mlp", {"x": x}),
            "bare grpc.aio + onnxruntime in a thread pool",
        ),
        Scenario("engine-mlp", engine, _request("mlp", {"x": x}), "engine, one-model graph"),
        Scenario(
            "engine-mlp-stream",
            engine,
            _request("mlp", {"x": x}),
            "one-model graph over ModelStreamInfer (one stream per caller)",
            driver="stream",
        ),
        Scenario(
            "engine-mlp-http-json",
            engine,
            _request("mlp", {"x": x}),
            "one-model graph over HTTP/REST, JSON tensors (keep-alive connection per caller)",
            driver="http",
            http=_http_infer("mlp", x, binary=False),
        ),
        Scenario(
            "engine-mlp-http-binary",
            engine,
            _request("mlp", {"x": x}),
            "one-model graph over HTTP/REST, binary tensor data in and out",
            driver="http",
            http=_http_infer("mlp", x, binary=True),
        ),
        Scenario(
            "engine-chain5", engine, _request("chain", {"x": x}), "engine, model + 4 chained expr nodes"
        ),
        Scenario("engine-fraud", engine, _request("fraud", fraud), "engine, fraud example (9 nodes, switch)"),
        Scenario(
            "engine-fraud-monitored",
            engine,
            _request("fraud", fraud, request_id="bench-1"),
            "fraud with monitoring: drift on its profile.json (10 columns), label window, contracts",
            (("ENGINE_MONITORING", "true"),),
        ),
        Scenario(
            "engine-fraud-unmonitored",
            engine,
            _request("fraud", fraud, request_id="bench-1"),
            "fraud with monitoring off (no drift, no label window; contracts stay)",
            (("ENGINE_MONITORING", "false"),),
        ),
        Scenario(
            "engine-fraud-trace100",
            engine,
            _request("fraud", fraud),
            "fraud, every request traced (spans made, exported nowhere)",
            (("ENGINE_TRACE_EXPORTER", "discard"), ("ENGINE_TRACE_SAMPLE_RATIO", "1.0")),
        ),
        Scenario(
            "engine-fraud-trace1",
            engine,
            _request("fraud", fraud),
            "fraud, 1% of requests traced",
            (("ENGINE_TRACE_EXPORTER", "discard"), ("ENGINE_TRACE_SAMPLE_RATIO", "0.01")),
        ),
        Scenario(
            "engine-fraud-log100",
            engine,
            _request("fraud", fraud),
            "fraud, every request logged to JSON Lines (policy: nodes too)",
            (
                (
                    "ENGINE_REQUEST_LOG",
                    json.dumps({"sink": "jsonl", "directory": str(log_dir), "fsync": "none"}),
                ),
            ),
        ),
        Scenario(
            "engine-fraud-logstalled",
            engine,
            _request("fraud", fraud),
            "fraud, every request logged to a sink that never answers (queue fills, drops counted)",
            (
                (
                    "ENGINE_REQUEST_LOG",
                    json.dumps({"sink": "cloudevents", "url": stalled_url, "timeout_s": 30.0}),
                ),
            ),
        ),
        Scenario(
            "engine-fraud-overload",
            engine,
            _request("fraud", fraud),
            "fraud at 3x the c=16 load (48 callers) with admission limit 8 + queue 8 + 5 ms wait",
            (
                ("ENGINE_MAX_CONCURRENCY", "8"),
                ("ENGINE_MAX_QUEUE", "8"),
                ("ENGINE_MAX_QUEUE_WAIT_S", "0.005"),
            ),
            concurrency=(48,),
        ),
        Scenario(
            "engine-mlp-c64",
            engine,
            _request("mlp", {"x": x}),
            f"engine, one-model graph, no batching, {batching.CONCURRENCY} callers",
            concurrency=(batching.CONCURRENCY,),
        ),
        Scenario(
            "engine-mlp-batched",
            batching.with_metrics_port(engine, batched_metrics),
            _request("mlp_batched", {"x": x}),
            f"engine, one-model graph with batching, {batching.CONCURRENCY} callers",
            concurrency=(batching.CONCURRENCY,),
            metrics_port=batched_metrics,
        ),
        Scenario(
            "engine-wide-c64",
            engine,
            _request("wide", {"x": wide}),
            f"engine, the wide model, no batching, {batching.CONCURRENCY} callers",
            concurrency=(batching.CONCURRENCY,),
        ),
        Scenario(
            "engine-wide-batched",
            batching.with_metrics_port(engine, batched_metrics),
            _request("wide_batched", {"x": wide}),
            f"engine, the wide model with batching, {batching.CONCURRENCY} callers",
            concurrency=(batching.CONCURRENCY,),
            metrics_port=batched_metrics,
        ),
        Scenario(
            "engine-mlp-workers2",
            batching.with_workers(engine, 2),
            _request("mlp", {"x": x}),
            "engine --workers 2, both on the server core (for RSS per worker, not speed)",
            concurrency=(max(CONCURRENCY),),
        ),
        *shadows.scenarios(Scenario, engine, _request, fraud),
        *flood.scenarios(Scenario, engine, _request, x, _free_port()),
        Scenario(
            "engine-quickstart",
            engine,
            _request("quickstart", {"x": np.ones((1, 4))}),
            "engine, quickstart example (3 nodes)",
        ),
    ]


def _wait_ready(url: str, proc: subprocess.Popen, timeout_s: float = 60) -> None:
    channel = grpc.insecure_channel(url)
    ready = channel.unary_unary(
        "/inference.GRPCInferenceService/ServerReady", response_deserializer=pb.ServerReadyResponse.FromString
    )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if ready(pb.ServerReadyRequest().SerializeToString(), timeout=1).ready:
                channel.close()
                return
        except grpc.RpcError:
            pass
        time.sleep(0.2)
    raise RuntimeError("server did not become ready")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _serving(pid: int) -> list[int]:
    """The supervisor (if any) and every worker: server CPU is theirs together."""
    return [pid, *batching.children(pid)]


def _load_command(scenario: Scenario, url: str, http_port: int, concurrency: int) -> list[str]:
    common = ["--concurrency", str(concurrency), "--seconds", str(SECONDS)]
    if scenario.driver == "http":
        request = base64.b64encode(scenario.http).decode()
        return [
            sys.executable,
            "-m",
            "bench.load_http",
            "--url",
            f"127.0.0.1:{http_port}",
            "--request",
            request,
            *common,
        ]
    payload = base64.b64encode(scenario.request.SerializeToString()).decode()
    return [
        sys.executable,
        "-m",
        "bench.load",
        "--url",
        url,
        "--payload",
        payload,
        "--mode",
        scenario.driver,
        "--refused",
        scenario.refused,
        *common,
    ]


def measure(scenario: Scenario, port: int, http_port: int = -1) -> list[dict]:
    url = f"127.0.0.1:{port}"
    env = {**os.environ, **dict(scenario.env)}
    proc = subprocess.Popen(
        scenario.command, cwd=ROOT, env=env, preexec_fn=lambda: os.sched_setaffinity(0, {SERVER_CORE})
    )
    rows = []
    try:
        _wait_ready(url, proc)
        for concurrency in scenario.concurrency or CONCURRENCY:
            cpu0 = {p: _cpu_seconds(p) for p in _serving(proc.pid)}
            t0 = time.monotonic()
            out = subprocess.run(
                _load_command(scenario, url, http_port, concurrency),
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=True,
                preexec_fn=lambda: os.sched_setaffinity(0, {CLIENT_CORE}),
            )
            wall = time.monotonic() - t0
            result = json.loads(out.stdout.strip().splitlines()[-1])
            if scenario.metrics_port:  # cumulative, warm-ups included: a mean, not a count
                sizes = batching.batch_sizes(scenario.metrics_port)
                result["mean_batch"] = sizes["rows"] / sizes["batches"] if sizes["batches"] else None
            cpu = sum(_cpu_seconds(p) - cpu0.get(p, 0.0) for p in _serving(proc.pid))
            workers_rss = batching.worker_rss_mb(proc.pid)
            # The client's warm-up (1 s at the same rate) is served but not counted in result["requests"].
            served = result["rps"] * (result["seconds"] + WARMUP_S)
            result.update(
                scenario=scenario.name,
                note=scenario.note,
                concurrency=concurrency,
                server_cpu=cpu / wall,
                server_rss_mb=_rss_mb(proc.pid),
                worker_rss_mb=workers_rss,
                server_cpu_us_per_req=cpu / max(1.0, served) * 1e6,
            )
            rows.append(result)
            print(
                f"  {scenario.name:<18} c={concurrency:<3} {result['rps']:>8.0f} infer/s  "
                f"p50 {result['p50_ms']:.3f} ms  p99 {result['p99_ms']:.3f} ms  errors {result['errors']}",
                flush=True,
            )
    finally:
        stop(proc, 15)
    return rows


def stop(proc: subprocess.Popen, timeout_s: float) -> None:
    """SIGTERM, then SIGKILL if the server has not exited within ``timeout_s``."""
    proc.terminate()
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def report(rows: list[dict]) -> str:
    def pick(name: str, c: int) -> dict | None:
        return next((r for r in rows if r["scenario"] == name and r["concurrency"] == c), None)

    hi, lo = max(CONCURRENCY), min(CONCURRENCY)
    echo, inline = pick("floor-echo", hi), pick("floor-ort-inline", hi)
    lines = [
        f"| scenario | infer/s c={hi} | p50 ms c={lo} | p99 ms c={hi} | server CPU/req µs | RSS MB "
        f"| vs echo floor | vs ort-inline floor |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in dict.fromkeys(r["scenario"] for r in rows):
        top, one = pick(name, hi), pick(name, lo)
        if top is None or one is None:
            continue
        ratio_echo = f"{top['rps'] / echo['rps']:.2f}" if echo else "-"
        ratio_inline = f"{top['rps'] / inline['rps']:.2f}" if inline else "-"
        lines.append(
            f"| {name} | {top['rps']:,.0f} | {one['p50_ms']:.3f} | {top['p99_ms']:.3f} "
            f"| {top['server_cpu_us_per_req']:.0f} | {top['server_rss_mb']:.0f} "
            f"| {ratio_echo} | {ratio_inline} |"
        )
    mlp, chain = pick("engine-mlp", hi), pick("engine-chain5", hi)
    if mlp and chain:
        per_node = (chain["server_cpu_us_per_req"] - mlp["server_cpu_us_per_req"]) / 4
        lines.append(f"\nserver CPU per additional chained node: {per_node:.1f} µs")
    overload, base = pick("engine-fraud-overload", 48), pick("engine-fraud", hi)
    if overload and base:
        goodput = overload["rps"] / base["rps"]
        tail = overload["p99_ms"] / base["p99_ms"]
        lines.append(
            f"overload (48 callers, limit 8): goodput {overload['rps']:,.0f}/s = {goodput:.2f}x the unshed "
            f"maximum; accepted p99 {overload['p99_ms']:.2f} ms = {tail:.2f}x the c={hi} p99; "
            f"{overload['errors']:,} calls shed with RESOURCE_EXHAUSTED"
        )
    client_bound = [r["scenario"] for r in rows if r["concurrency"] == hi and r["client_cpu"] > 0.9]
    if client_bound:
        lines.append(
            f"note: the load generator was near 100% CPU for {', '.join(client_bound)}; "
            "those throughputs are a lower bound"
        )
    doors = [
        (name, pick(name, hi))
        for name in ("engine-mlp-stream", "engine-mlp-http-json", "engine-mlp-http-binary")
    ]
    if mlp and any(row for _, row in doors):
        lines.append(
            f"one-model graph by front door, c={hi}, as a ratio to gRPC unary ({mlp['rps']:,.0f}/s):"
        )
        for name, row in doors:
            if row is not None:
                ratio = row["rps"] / mlp["rps"]
                lines.append(f"  {name}: {row['rps']:,.0f}/s = {ratio:.2f}x, p99 {row['p99_ms']:.3f} ms")
    on, off = pick("engine-fraud-monitored", hi), pick("engine-fraud-unmonitored", hi)
    if on and off:
        lines.append(
            f"monitoring (drift) on vs off, fraud c={hi}: {on['rps'] / off['rps']:.2f}x the throughput "
            f"(target >= 0.9x), server CPU/req {on['server_cpu_us_per_req']:.0f} vs "
            f"{off['server_cpu_us_per_req']:.0f} µs"
        )
    lines += batching.report_lines(rows)
    lines += shadows.report_lines(rows)
    lines += flood.report_lines(rows)
    return "\n".join(lines)


def main() -> int:
    if not MLP.exists():
        subprocess.run([sys.executable, str(ROOT / "graphs" / "build_models.py")], check=True)
    only = set(filter(None, os.environ.get("BENCH_ONLY", "").split(",")))
    graphs = _graphs_dir()
    print(
        f"server on core {SERVER_CORE}, load generator on core {CLIENT_CORE}, {SECONDS:g} s per measurement"
    )
    rows: list[dict] = []
    try:
        port = _free_port()  # servers run one after another on the same port
        http_port = _free_port()
        stalled = socket.socket()  # accepts connections into its backlog, never reads: a stalled sink
        stalled.bind(("127.0.0.1", 0))
        stalled.listen(64)
        stalled_url = f"http://127.0.0.1:{stalled.getsockname()[1]}/"
        for scenario in scenarios(graphs, port, graphs / "request-logs", stalled_url, http_port):
            if only and scenario.name not in only:
                continue
            rows.extend(measure(scenario, port, http_port))
    finally:
        shutil.rmtree(graphs, ignore_errors=True)
        with contextlib.suppress(NameError):
            stalled.close()
    table = report(rows)
    print("\n" + table)
    out = ROOT / "bench" / "results" / time.strftime("%Y%m%dT%H%M%S.json")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    out.write_text(json.dumps({"commit": commit.stdout.strip(), "seconds": SECONDS, "rows": rows}, indent=2))
    print(f"\nwrote {out.relative_to(ROOT)}")
    if not only or "features" in only:  # a features node vs a bare redis-py pipeline (real Redis)
        print()
        subprocess.run([sys.executable, "-m", "bench.features"], cwd=ROOT, check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
