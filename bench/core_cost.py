"""A measurement probe: the inference core's own cost per call, with no transport.

The servers' figures in ``make bench`` include grpc.aio, which costs most of a call and makes
one run differ from the next by tens of percent on a shared machine. This starts the engine
(``EngineServer``, as ``engine serve`` does, on an unused port), then calls its inference core
directly, the way the gRPC door does: parse the request bytes, build a ``GrpcInferCall`` with a
stand-in context (no deadline, no metadata), ``await core.infer``, serialise the response. Beside
the engine's graphs it runs the floor server's own handler (``bench.floor_server.answerer``) on
the same bytes, as an ``async def`` on the same loop: ``floor-echo`` answers the input,
``floor-ort`` runs the model. What the engine adds above the transport is then ``mlp`` less
``floor-echo``, the same subtraction the servers' figures make with the transport included.

The graphs are the bench's own: the one-model graph, the model plus a sigmoid expression
(``chain2``) and the model plus four arithmetic expressions (``chain5``).

Two measures:

- CPU (the default): the loop thread's CPU per call, the smallest of ``--repeats`` rounds of
  ``--calls`` calls (the smallest: what other work on the machine added least to);
- ``--instructions``: the probe runs itself under valgrind's callgrind, which counts the
  instructions executed rather than timing them, so the figure is the same from one run to the
  next whatever else the machine is doing. For each target it warms up with ``--calls`` calls,
  then counts a window of ``--calls`` calls and a window of twice as many (``callgrind_control``
  zeroes and dumps the counters around them); the difference of the two windows, over
  ``--calls``, is one call's instructions with every fixed cost of a window cancelled. Counted on
  the event loop's thread, where every call runs (onnxruntime runs there too, one thread per
  model). Work the clock drives rather than the calls is left out: the other threads, and the
  loop-lag monitor's 5 ms timer, stopped for the count. What remains on the loop between calls
  (drift counting a few times a second, the rollout driver) adds about 1 % from one run to the
  next. About 50 times slower than the real thing: use a few hundred calls.

    python -m bench.core_cost [--calls 1000] [--repeats 40] [--graph mlp --graph chain5 ...]
    python -m bench.core_cost --instructions [--calls 300]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench import peers, run
from bench.floor_server import answerer, open_session
from engine.config import ServeSettings
from engine.protocol.calls import GrpcInferCall
from engine.protocol.codec import parse_message
from engine.protocol.generated.inference import grpc_service_pb2 as pb
from engine.server import EngineServer, freeze_startup_heap

GRAPHS = {"mlp": run.SINGLE, "chain2": peers.CHAIN2, "chain5": run.CHAIN}
FLOORS = ("floor-echo", "floor-ort")
TARGETS = (*FLOORS, *GRAPHS)

_CHILD = "BENCH_CORE_COST_CALLGRIND"
"""Set in the probe's own environment when it runs under callgrind (``--instructions``)."""

Call = Callable[[], Awaitable[object]]


class _Context:
    """What ``GrpcInferCall`` reads of a grpc.aio context: no deadline, no metadata."""

    def time_remaining(self) -> float | None:
        return None

    def invocation_metadata(self) -> tuple[()]:
        return ()


def _request(graph: str) -> bytes:
    request = pb.ModelInferRequest(model_name=graph)
    request.inputs.add(name="x", datatype="FP32", shape=[1, 32])
    request.raw_input_contents.append(np.ones((1, 32), np.float32).tobytes())
    return request.SerializeToString()


def _calls(engine: EngineServer, targets: list[str]) -> dict[str, Call]:
    """One call of each target, as a coroutine function."""
    core, limits = engine.core, engine.grpc_options.limits
    context: Any = _Context()
    found: dict[str, Call] = {}
    for target in targets:
        data = _request(target)
        if target in FLOORS:
            answer = answerer(None if target == "floor-echo" else open_session(str(run.MLP)))

            async def floor(answer: Callable[[bytes], bytes] = answer, data: bytes = data) -> object:
                return answer(data)

            found[target] = floor
        else:

            async def graph(data: bytes = data) -> object:
                request = parse_message(pb.ModelInferRequest, data, limits)
                response = await core.infer(GrpcInferCall(request, context, limits))
                return response.SerializeToString()

            found[target] = graph
    return found


async def _cpu(call: Call, calls: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        for _ in range(calls):
            await call()
        best = min(best, (time.process_time() - start) / calls * 1e6)
    return best


def _callgrind(command: str, *args: str) -> None:
    subprocess.run(["callgrind_control", command, *args, str(os.getpid())], check=True, capture_output=True)


async def _windows(target: str, call: Call, calls: int) -> None:
    """Under callgrind: a warm-up, then windows of ``calls`` and ``2 * calls`` calls, each dumped."""
    for _ in range(calls):
        await call()
    _callgrind("--zero")
    for size in (1, 2):
        for _ in range(size * calls):
            await call()
        _callgrind("--dump", f"{target}/{size}")


async def measure(folder: Path, targets: list[str], calls: int, repeats: int) -> dict[str, float]:
    """µs of CPU per call of each target (the smallest round); under callgrind, the windows only."""
    settings = ServeSettings.from_env(graphs=folder, host="127.0.0.1", port=0, http_port=-1, metrics_port=0)
    engine = EngineServer(settings)
    await engine.start()
    freeze_startup_heap()
    counting = bool(os.environ.get(_CHILD))
    if counting and engine._lag_monitor is not None:
        # Its timer fires every 5 ms of the clock, not per call: under callgrind, where a call takes
        # about 50 times as long, it would add a tenth to every figure, and its noise.
        engine._lag_monitor.stop()
    found: dict[str, float] = {}
    try:
        for target, call in _calls(engine, targets).items():
            if counting:
                await _windows(target, call, calls)
            else:
                found[target] = await _cpu(call, calls, repeats)
    finally:
        await engine.stop()
    return found


def write_graphs(folder: Path, names: list[str]) -> None:
    """``folder/<name>/graph.yaml`` and its model for each of ``names`` (keys of ``GRAPHS``).

    The model runs inline, as ``execution: auto`` decides for it at full speed: under callgrind
    its timed warm-up is about 50 times slower, and ``auto`` would send it to the thread pool."""
    for name in names:
        graph = GRAPHS[name].replace("model: mlp32.onnx,", "model: mlp32.onnx, execution: inline,")
        assert "execution: inline" in graph, name
        (folder / name).mkdir()
        (folder / name / "graph.yaml").write_text(graph)
        shutil.copy(run.MLP, folder / name / "mlp32.onnx")


def _run(targets: list[str], calls: int, repeats: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_graphs(folder, [name for name in targets if name in GRAPHS])
        try:
            import uvloop

            return uvloop.run(measure(folder, targets, calls, repeats))
        except ImportError:
            return asyncio.run(measure(folder, targets, calls, repeats))


def read_dumps(folder: Path) -> dict[str, dict[str, int]]:
    """``label -> {thread: instructions}`` from callgrind's dump files in ``folder`` (one file per
    dump and thread with ``--separate-threads=yes``; each names its thread on a ``thread:`` line)."""
    found: dict[str, dict[str, int]] = {}
    for path in sorted(folder.glob("callgrind.out.*")):
        label = thread = None
        total = None
        with path.open() as lines:
            for line in lines:
                if line.startswith("desc: Trigger: dump "):
                    label = line.split("desc: Trigger: dump ", 1)[1].strip()
                elif line.startswith("thread: "):
                    thread = line.split()[1]
                elif line.startswith("summary: "):
                    total = int(line.split()[1])
                    break
        if label is not None and total is not None:
            found.setdefault(label, {})[thread or "1"] = total
    return found


def instructions(targets: list[str], calls: int) -> dict[str, float]:
    """Runs the probe under callgrind; per target, instructions per call on the loop's thread
    (valgrind's thread 1). The other threads' counts are left out: they are gRPC's and the
    engine's background work, which runs by the clock, not by the call."""
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit("--instructions needs valgrind (Debian's valgrind package)")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        command = [
            "valgrind",
            "--tool=callgrind",
            "--separate-threads=yes",
            "--dump-line=no",
            f"--callgrind-out-file={out}/callgrind.out",
            sys.executable,
            "-m",
            "bench.core_cost",
            "--calls",
            str(calls),
            *[arg for target in targets for arg in ("--graph", target)],
        ]
        # The same hash seed in every run: set and dict orders, and so the work, repeat exactly.
        env = {**os.environ, _CHILD: "1", "PYTHONHASHSEED": "0"}
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            sys.stderr.write(done.stderr[-4000:])
            raise SystemExit(f"the probe under callgrind failed ({done.returncode})")
        dumps = read_dumps(out)
    found: dict[str, float] = {}
    for target in targets:
        one, two = dumps.get(f"{target}/1", {}).get("1"), dumps.get(f"{target}/2", {}).get("1")
        if one is None or two is None:
            raise SystemExit(f"callgrind wrote no dumps of the loop's thread for {target}")
        found[target] = (two - one) / calls
    return found


def _report(found: dict[str, float], unit: str) -> None:
    width = max(len(target) for target in found)
    for target, value in found.items():
        print(f"{target:<{width}}  {value:,.1f} {unit} per call")
    echo = found.get("floor-echo")
    if "mlp" in found and echo is not None:
        above = found["mlp"] - echo
        print(f"the one-model graph above the echo floor's handler: {above:,.1f} {unit}")
    if "mlp" in found and "chain5" in found:
        node = (found["chain5"] - found["mlp"]) / 4
        share = node / found["mlp"]
        print(f"per additional expression node (chain5): {node:,.1f} {unit} ({share:.1%} of mlp)")
    if "mlp" in found and "chain2" in found:
        node = found["chain2"] - found["mlp"]
        print(f"the sigmoid node (chain2): {node:,.1f} {unit} ({node / found['mlp']:.1%} of mlp)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int)
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--graph", action="append", choices=TARGETS, help="a graph or a floor (repeatable)")
    parser.add_argument("--instructions", action="store_true", help="count instructions under callgrind")
    args = parser.parse_args()
    targets = args.graph or list(TARGETS)
    if os.environ.get(_CHILD):  # the probe under callgrind: only the windows, no figures
        _run(targets, args.calls, 0)
        return
    if args.instructions:
        counted = instructions(targets, args.calls or 300)
        print("instructions on the event loop's thread:")
        _report(counted, "instructions")
        json.dump(counted, sys.stderr)
    else:
        found = _run(targets, args.calls or 1000, args.repeats)
        _report(found, "µs of CPU")
        json.dump(found, sys.stderr)
    print(file=sys.stderr)


if __name__ == "__main__":
    main()
