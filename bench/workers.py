"""`make bench-workers`: how ``--workers`` scales, driven by the lightest client there is.

The one-model graph is served by ``engine serve --workers 1`` and ``--workers 2`` (not pinned:
the workers may use every core) and driven by Triton's C++ ``perf_analyzer`` (it ships in the
tritonclient wheel) at a fixed concurrency. On a machine whose cores are shared between the
server and the client, the client's share of the CPU is what caps the measured throughput, so
each row says how much CPU the client and the server used: a scaling figure without it would
flatter or slander the server.

Environment: BENCH_SECONDS (measurement window, default 5), BENCH_CONCURRENCY (default 16).
"""

from __future__ import annotations

import csv
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import batching
from bench.run import MLP, ROOT, SINGLE, _cpu_seconds, _wait_ready

SECONDS = float(os.environ.get("BENCH_SECONDS", "5"))
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "16").split(",")[-1])


def perf_analyzer() -> tuple[str, dict[str, str]]:
    """The perf_analyzer binary beside this interpreter and the environment it needs."""
    binary = shutil.which("perf_analyzer", path=str(Path(sys.executable).parent))
    if binary is None:
        raise SystemExit("perf_analyzer is not installed (it ships in the tritonclient wheel)")
    env = dict(os.environ)
    try:
        import nvidia.cuda_runtime  # type: ignore[import-not-found]

        lib = Path(next(iter(nvidia.cuda_runtime.__path__))) / "lib"
        env["LD_LIBRARY_PATH"] = f"{lib}:{env.get('LD_LIBRARY_PATH', '')}"
    except ImportError:
        pass
    return binary, env


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def measure(graphs: Path, workers: int) -> dict[str, float]:
    port = _free_port()
    command = [
        sys.executable, "-m", "engine.cli", "serve", str(graphs), "--port", str(port),
        "--log-level", "WARNING", "--metrics-port", "-1", "--workers", str(workers),
    ]  # fmt: skip
    server = subprocess.Popen(command, cwd=ROOT)
    binary, env = perf_analyzer()
    out = Path(tempfile.mkdtemp()) / "pa.csv"
    try:
        _wait_ready(f"127.0.0.1:{port}", server)
        time.sleep(1.0 if workers == 1 else 3.0)  # every worker serving
        serving = [server.pid, *batching.children(server.pid)]
        cpu0 = {p: _cpu_seconds(p) for p in serving}
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.monotonic()
        subprocess.run(
            [
                binary, "-m", "mlp", "-u", f"127.0.0.1:{port}", "-i", "grpc", "--shape", "x:1,32",
                "--concurrency-range", str(CONCURRENCY), "--measurement-interval", str(int(SECONDS * 1000)),
                "-f", str(out),
            ],
            env=env, check=True, capture_output=True, text=True,
        )  # fmt: skip
        wall = time.monotonic() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        server_cpu = sum(_cpu_seconds(p) - cpu0.get(p, 0.0) for p in serving)
        client_cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        with out.open() as f:
            row = next(csv.DictReader(f))
        return {
            "workers": workers,
            "rps": float(row["Inferences/Second"]),
            "p50_us": float(row.get("p50 latency", 0) or 0),
            "p99_us": float(row.get("p99 latency", 0) or 0),
            "server_cores": server_cpu / wall,
            "client_cores": client_cpu / wall,
        }
    finally:
        server.terminate()
        server.wait(30)
        shutil.rmtree(out.parent, ignore_errors=True)


def main() -> int:
    graphs = Path(tempfile.mkdtemp(prefix="bench-workers-"))
    try:
        (graphs / "mlp").mkdir()
        (graphs / "mlp" / "graph.yaml").write_text(SINGLE)
        shutil.copy(MLP, graphs / "mlp" / "mlp32.onnx")
        cores = len(os.sched_getaffinity(0))
        print(
            f"{cores} cores shared by server and client; perf_analyzer c={CONCURRENCY}, {SECONDS:g} s windows"
        )
        rows = [measure(graphs, workers) for workers in (1, 2)]
    finally:
        shutil.rmtree(graphs, ignore_errors=True)
    print("\n| workers | infer/s | p50 ms | p99 ms | server CPU (cores) | client CPU (cores) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['workers']:.0f} | {r['rps']:,.0f} | {r['p50_us'] / 1000:.3f} | {r['p99_us'] / 1000:.3f} "
            f"| {r['server_cores']:.2f} | {r['client_cores']:.2f} |"
        )
    one, two = rows
    per_core = [r["rps"] / max(r["server_cores"], 1e-9) for r in rows]
    print(
        f"\n--workers 2 / --workers 1: {two['rps'] / one['rps']:.2f}x infer/s; per server core "
        f"{per_core[0]:,.0f} and {per_core[1]:,.0f} infer/s (the client took the rest of the machine)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
