"""A measurement probe: a whole server's instructions per gRPC call, every thread counted.

``bench.core_cost`` counts the inference core without the transport; the servers' figures in
``make bench`` time the transport too, and move by tens of percent from one run to the next on a
shared machine. This counts what a server process executes per call, transport included, so
that "the engine against the grpc.aio floor" is one stable ratio: each server runs under
valgrind's callgrind (``--separate-threads=yes``, all threads summed: gRPC's C core polls and
completes on threads of its own), and a client outside valgrind calls it ``ModelInfer`` with the
same request bytes, one call at a time or ``--concurrency`` at once (closed loop).

For each server: start it under callgrind, wait until it is ready, warm up with ``--calls``
calls, then count a window of ``--calls`` calls and one of twice as many (``callgrind_control``
zeroes and dumps the counters around each), and an idle window of a few seconds. The two call
windows' difference over ``--calls`` is one call's instructions, every fixed cost of a window
cancelled; work the clock drives rather than the calls (timers such as the engine's loop-lag
monitor, gRPC's own polling) does not cancel, because the longer window lasts longer, so each
window first has the idle window's rate of instructions per second, times its own duration,
taken off. Under callgrind a call is about 50 times slower than the real thing.

The servers: ``floor-echo`` and ``floor-ort`` (``bench.floor_server``: bare grpc.aio on uvloop,
answering the input or running the model inline), and the engine (``engine serve --workers 1``,
every default setting) serving the bench's graphs as ``bench.core_cost`` writes them: ``mlp``,
``chain2`` (model + sigmoid), ``chain5`` (model + four arithmetic expressions). Beside them, the
other transport ``make bench-peers`` measures: grpc's thread-pool server as a floor
(``floor-echo-sync``, and ``floor-echo-sync-to-loop``, each call handed to one asyncio loop) and
with the engine's core behind it (``mlp-threads`` and the others, ``bench.engine_threads``).

    python -m bench.server_cost [--calls 200] [--concurrency 1] [--server floor-echo --server mlp ...]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc

from bench import run
from bench.core_cost import GRAPHS, _request, read_dumps, write_graphs
from engine.protocol.generated.inference import grpc_service_pb2 as pb

FLOORS = {"floor-echo": "echo", "floor-ort": "ort-inline"}
SYNC_FLOORS = {"floor-echo-sync": "sync", "floor-echo-sync-to-loop": "sync-to-loop"}
THREADS = {f"{name}-threads": name for name in GRAPHS}
"""The engine's core behind grpc's thread-pool server, each call handed to its loop (bench.engine_threads)."""
SERVERS = (*FLOORS, *SYNC_FLOORS, *GRAPHS, *THREADS)
IDLE_S = 5.0
"""The idle window: long enough for a few hundred ticks of a 5 ms timer under callgrind."""


def _command(server: str, port: int, graphs: Path) -> list[str]:
    floor = [sys.executable, "-m", "bench.floor_server", "--port", str(port), "--model", str(run.MLP)]
    if server in FLOORS:
        return [*floor, "--mode", FLOORS[server]]
    if server in SYNC_FLOORS:
        return [*floor, "--mode", "echo", "--transport", SYNC_FLOORS[server], "--threads", "8"]
    if server in THREADS:
        return [
            sys.executable,
            "-m",
            "bench.engine_threads",
            str(graphs),
            "--port",
            str(port),
            "--threads",
            "16",
        ]
    return [
        *(sys.executable, "-m", "engine.cli", "serve", str(graphs), "--port", str(port)),
        *("--log-level", "WARNING", "--metrics-port", "0", "--workers", "1", "--http-port", "-1"),
    ]


def _callgrind(command: str, label: str | None, pid: int) -> None:
    args = ["callgrind_control", command if label is None else f"{command}={label}", str(pid)]
    subprocess.run(args, check=True, capture_output=True)


def _window(
    call: grpc.UnaryUnaryMultiCallable[bytes, pb.ModelInferResponse],
    data: bytes,
    calls: int,
    pid: int,
    label: str,
    callers: ThreadPoolExecutor,
) -> float:
    """``calls`` calls between a zero and a dump labelled ``label``; the window's seconds."""
    _callgrind("--zero", None, pid)
    start = time.monotonic()
    _calls(call, data, calls, callers)
    _callgrind("--dump", label, pid)
    return time.monotonic() - start


def _calls(
    call: grpc.UnaryUnaryMultiCallable[bytes, pb.ModelInferResponse],
    data: bytes,
    calls: int,
    callers: ThreadPoolExecutor,
) -> None:
    """``calls`` calls, as many at once as ``callers`` has threads (each caller waits for its answer)."""
    for _ in callers.map(lambda _: call(data, timeout=300), range(calls)):
        pass


def count(server: str, calls: int, concurrency: int = 1) -> dict[str, float]:
    """One server's instructions per call: all threads, and the thread that started it."""
    with tempfile.TemporaryDirectory(prefix="server-cost-") as tmp:
        out, graphs = Path(tmp) / "out", Path(tmp) / "graphs"
        out.mkdir()
        graphs.mkdir()
        write_graphs(graphs, list(GRAPHS))
        port = run._free_port()
        command = [
            *("valgrind", "--tool=callgrind", "--separate-threads=yes", "--dump-line=no"),
            f"--callgrind-out-file={out}/callgrind.out",
            *_command(server, port, graphs),
        ]
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        log = Path(tmp) / "server.log"  # a file, not a pipe: nobody reads a pipe while the calls run
        with log.open("wb") as sink:
            proc = subprocess.Popen(command, cwd=run.ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT)
        try:
            _ready(f"127.0.0.1:{port}", proc, log)
            channel = grpc.insecure_channel(f"127.0.0.1:{port}")
            call: grpc.UnaryUnaryMultiCallable[bytes, pb.ModelInferResponse] = channel.unary_unary(
                "/inference.GRPCInferenceService/ModelInfer",
                request_serializer=None,
                response_deserializer=pb.ModelInferResponse.FromString,
            )
            data = _request(THREADS.get(server, server) if server in GRAPHS or server in THREADS else "mlp")
            with ThreadPoolExecutor(concurrency) as callers:
                _calls(call, data, calls, callers)  # warm-up
                one = _window(call, data, calls, proc.pid, "one", callers)
                two = _window(call, data, 2 * calls, proc.pid, "two", callers)
            _callgrind("--zero", None, proc.pid)
            time.sleep(IDLE_S)
            _callgrind("--dump", "idle", proc.pid)
            channel.close()
        finally:
            run.stop(proc, 60)
        dumps = read_dumps(out)
    rate = {thread: n / IDLE_S for thread, n in dumps["idle"].items()}

    def net(label: str, seconds: float, threads: set[str] | None = None) -> float:
        found = dumps[label]
        counted = {t: n for t, n in found.items() if threads is None or t in threads}
        return sum(n - rate.get(t, 0.0) * seconds for t, n in counted.items())

    return {
        "all": (net("two", two) - net("one", one)) / calls,
        "main": (net("two", two, {"1"}) - net("one", one, {"1"})) / calls,
        "idle_per_s": sum(rate.values()),
    }


def _ready(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    try:
        run._wait_ready(url, proc, timeout_s=600)
    except RuntimeError:
        sys.stderr.write(log.read_text(errors="replace")[-4000:])
        raise


def report(found: dict[str, dict[str, float]], concurrency: int = 1) -> str:
    lines = [f"instructions per call, whole server (every thread), concurrency {concurrency}:"]
    width = max(len(name) for name in found)
    for name, figures in found.items():
        # a thread-pool server's calls run on its handler threads: its main thread only waits
        main = f"{figures['main']:,.0f}" if figures["main"] > 1000 else "idle"
        lines.append(
            f"{name:<{width}}  {figures['all']:>11,.0f}  (main thread {main}; "
            f"idle {figures['idle_per_s']:,.0f}/s)"
        )
    echo = found.get("floor-echo")
    if echo is not None:
        for name, figures in found.items():
            if name != "floor-echo":
                lines.append(
                    f"{name} above floor-echo: {figures['all'] - echo['all']:,.0f} instructions; "
                    f"floor-echo / {name}: {echo['all'] / figures['all']:.2f}"
                )
    if "mlp" in found and "chain5" in found:
        node = (found["chain5"]["all"] - found["mlp"]["all"]) / 4
        share = node / found["mlp"]["all"]
        lines.append(f"per additional expression node (chain5): {node:,.0f} ({share:.1%} of mlp)")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--server", action="append", choices=SERVERS, help="a server (repeatable)")
    parser.add_argument("--concurrency", type=int, default=1, help="calls in flight at once (closed loop)")
    parser.add_argument("--jobs", type=int, default=2, help="servers counted at once (the counts do not mix)")
    args = parser.parse_args()
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit("bench.server_cost needs valgrind (Debian's valgrind package)")
    servers = args.server or list(SERVERS)
    with ThreadPoolExecutor(args.jobs) as pool:
        counts = pool.map(lambda s: count(s, args.calls, args.concurrency), servers)
        counted = dict(zip(servers, counts, strict=True))
    print(report(counted, args.concurrency))
    json.dump(counted, sys.stderr)
    print(file=sys.stderr)


if __name__ == "__main__":
    main()
