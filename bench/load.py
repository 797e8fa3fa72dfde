"""A closed-loop load generator: ``concurrency`` callers, each sending the next request
as soon as the last answer arrives, for ``seconds``. Prints one JSON line of results.

Requests are serialised once and sent as bytes; answers are not parsed, so the
client spends as little CPU as it can. Its own CPU use is reported so a
client-bound measurement can be recognised.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import time

import grpc
import numpy as np


async def drive(url: str, payload: bytes, concurrency: int, seconds: float, warmup: float) -> dict:
    async with grpc.aio.insecure_channel(url) as channel:
        call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        latencies: list[int] = []
        errors = 0
        measuring = False
        stop_at = 0.0

        async def caller() -> None:
            nonlocal errors
            while True:
                t0 = time.perf_counter_ns()
                if t0 / 1e9 >= stop_at:
                    return
                try:
                    await call(payload, timeout=10)
                except grpc.RpcError:
                    errors += 1
                    continue
                if measuring:
                    latencies.append(time.perf_counter_ns() - t0)

        stop_at = time.perf_counter() + warmup
        await asyncio.gather(*(caller() for _ in range(concurrency)))
        latencies.clear()
        errors = 0
        measuring = True
        cpu0 = os.times()
        start = time.perf_counter()
        stop_at = start + seconds
        await asyncio.gather(*(caller() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
        cpu1 = os.times()
    lat = np.array(latencies, dtype=np.float64) / 1e6
    return {
        "requests": len(latencies),
        "errors": errors,
        "seconds": elapsed,
        "rps": len(latencies) / elapsed,
        "p50_ms": float(np.percentile(lat, 50)) if len(lat) else None,
        "p99_ms": float(np.percentile(lat, 99)) if len(lat) else None,
        "client_cpu": (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / elapsed,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--payload", required=True, help="base64 of a serialised ModelInferRequest")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    args = parser.parse_args()
    payload = base64.b64decode(args.payload)
    try:
        import uvloop

        result = uvloop.run(drive(args.url, payload, args.concurrency, args.seconds, args.warmup))
    except ImportError:
        result = asyncio.run(drive(args.url, payload, args.concurrency, args.seconds, args.warmup))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
