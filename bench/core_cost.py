"""A measurement probe: the inference core's own CPU per call, with no transport.

The servers' figures in ``make bench`` include grpc.aio, which costs most of a call and makes
one run differ from the next by tens of percent on a shared machine. This starts the engine
(``EngineServer``, as ``engine serve`` does, on an unused port), then calls its inference core
directly, the way the gRPC door does: parse the request bytes, build a ``GrpcInferCall`` with a
stand-in context (no deadline, no metadata), ``await core.infer``, serialise the response. It
reports the loop thread's CPU per call, the smallest of ``--repeats`` rounds of ``--calls``
calls (the smallest: what other work on the machine added least to). The graphs are the
bench's own: the one-model graph, the model plus a sigmoid expression (``chain2``) and the
model plus four arithmetic expressions (``chain5``).

    python -m bench.core_cost [--calls 1000] [--repeats 40] [--graph mlp --graph chain5 ...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench import peers, run
from engine.config import ServeSettings
from engine.protocol.calls import GrpcInferCall
from engine.protocol.codec import parse_message
from engine.protocol.generated.inference import grpc_service_pb2 as pb
from engine.server import EngineServer, freeze_startup_heap

GRAPHS = {"mlp": run.SINGLE, "chain2": peers.CHAIN2, "chain5": run.CHAIN}


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


async def measure(folder: Path, graphs: list[str], calls: int, repeats: int) -> dict[str, float]:
    """µs of CPU per call of each graph (the smallest round)."""
    settings = ServeSettings.from_env(graphs=folder, host="127.0.0.1", port=0, http_port=-1)
    engine = EngineServer(settings)
    await engine.start()
    freeze_startup_heap()
    core, limits = engine.core, engine.grpc_options.limits
    context: Any = _Context()
    found: dict[str, float] = {}
    try:
        for graph in graphs:
            data = _request(graph)
            best = float("inf")
            for _ in range(repeats):
                start = time.process_time()
                for _ in range(calls):
                    request = parse_message(pb.ModelInferRequest, data, limits)
                    response = await core.infer(GrpcInferCall(request, context, limits))
                    response.SerializeToString()
                best = min(best, (time.process_time() - start) / calls * 1e6)
            found[graph] = best
    finally:
        await engine.stop()
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--graph", action="append", choices=sorted(GRAPHS))
    args = parser.parse_args()
    graphs = args.graph or ["mlp", "chain2", "chain5"]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name in graphs:
            (folder / name).mkdir()
            (folder / name / "graph.yaml").write_text(GRAPHS[name])
            shutil.copy(run.MLP, folder / name / "mlp32.onnx")
        try:
            import uvloop

            found = uvloop.run(measure(folder, graphs, args.calls, args.repeats))
        except ImportError:
            found = asyncio.run(measure(folder, graphs, args.calls, args.repeats))
    for graph, us in found.items():
        print(f"{graph}: {us:.1f} µs of CPU per call")
    if "mlp" in found and "chain5" in found:
        print(f"per additional expression node (chain5): {(found['chain5'] - found['mlp']) / 4:.1f} µs")
    if "mlp" in found and "chain2" in found:
        print(f"the sigmoid node (chain2): {found['chain2'] - found['mlp']:.1f} µs")
    json.dump(found, sys.stderr)
    print(file=sys.stderr)


if __name__ == "__main__":
    main()
