"""A closed-loop load generator: ``concurrency`` callers, each sending the next request
as soon as the last answer arrives, for ``seconds``. Prints one JSON line of results.

Requests are serialised once and sent as bytes; answers are not parsed, so the
client spends as little CPU as it can. Its own CPU use is reported so a
client-bound measurement can be recognised.

``--mode stream``: each caller is one ``ModelStreamInfer`` stream instead, sending its next
message when the last answer arrived (closed loop per stream, as a unary caller).

``--refused``: what a unary caller does with a refused call (RESOURCE_EXHAUSTED). ``retry``
sends the next call at once (the harshest flood); ``back-off`` behaves as gRPC's retry policy
asks of a client (gRFC A6): it waits the server's ``grpc-retry-pushback-ms`` when the refusal
carries one, otherwise a random delay up to ``DEFAULT_BACKOFF_S`` doubled on each refusal in a
row (capped at ``MAX_BACKOFF_S``).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import time

import grpc
import numpy as np

ERROR_TAG = b"\x0a"
"""The first byte of a serialised ModelStreamInferResponse whose ``error_message`` (field 1, a
string) is set; without it the message starts with ``infer_response`` (field 2)."""

PUSHBACK_KEY = "grpc-retry-pushback-ms"
DEFAULT_BACKOFF_S = 0.05  # a refusal without pushback (gRPC's own, in its C core): gRFC A6 style
MAX_BACKOFF_S = 1.0


def backoff_s(error: grpc.aio.AioRpcError, refusals: int) -> float:
    """How long a well-behaved client waits after its ``refusals``-th refusal in a row."""
    for key, value in error.trailing_metadata() or ():
        if key == PUSHBACK_KEY:
            try:
                return max(0, int(value)) / 1000
            except ValueError:
                break
    ceiling = min(MAX_BACKOFF_S, DEFAULT_BACKOFF_S * 2 ** max(0, refusals - 1))
    return random.uniform(0, ceiling)


async def drive(
    url: str,
    payload: bytes,
    concurrency: int,
    seconds: float,
    warmup: float,
    mode: str = "unary",
    refused: str = "retry",
) -> dict:
    async with grpc.aio.insecure_channel(url) as channel:
        call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        open_stream = channel.stream_stream("/inference.GRPCInferenceService/ModelStreamInfer")
        latencies: list[int] = []
        errors = 0
        codes: dict[str, int] = {}
        measuring = False
        stop_at = 0.0

        async def unary_caller() -> None:
            nonlocal errors
            refusals = 0
            while True:
                t0 = time.perf_counter_ns()
                if t0 / 1e9 >= stop_at:
                    return
                try:
                    await call(payload, timeout=10)
                except grpc.aio.AioRpcError as error:
                    errors += 1
                    codes[error.code().name] = codes.get(error.code().name, 0) + 1
                    if refused == "back-off" and error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                        refusals += 1
                        pause = min(backoff_s(error, refusals), stop_at - time.perf_counter())
                        if pause > 0:
                            await asyncio.sleep(pause)
                    continue
                refusals = 0
                if measuring:
                    latencies.append(time.perf_counter_ns() - t0)

        async def stream_caller() -> None:
            nonlocal errors
            stream = open_stream()
            try:
                while True:
                    t0 = time.perf_counter_ns()
                    if t0 / 1e9 >= stop_at:
                        return
                    await stream.write(payload)
                    answer = await stream.read()
                    if answer is grpc.aio.EOF:
                        errors += 1
                        return
                    if answer[:1] == ERROR_TAG:  # error_message (field 1) is set: a failed message
                        errors += 1
                        continue
                    if measuring:
                        latencies.append(time.perf_counter_ns() - t0)
            finally:
                await stream.done_writing()

        caller = stream_caller if mode == "stream" else unary_caller

        stop_at = time.perf_counter() + warmup
        await asyncio.gather(*(caller() for _ in range(concurrency)))
        latencies.clear()
        errors = 0
        codes.clear()
        measuring = True
        cpu0 = os.times()
        start = time.perf_counter()
        stop_at = start + seconds
        await asyncio.gather(*(caller() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
        cpu1 = os.times()
    return {**summary(latencies, errors, elapsed, cpu0, cpu1), "error_codes": codes}


def summary(
    latencies_ns: list[int], errors: int, elapsed: float, cpu0: os.times_result, cpu1: os.times_result
) -> dict[str, float | int | None]:
    """One measurement as every driver reports it (the JSON line bench.run reads)."""
    lat = np.array(latencies_ns, dtype=np.float64) / 1e6
    return {
        "requests": len(latencies_ns),
        "errors": errors,
        "seconds": elapsed,
        "rps": len(latencies_ns) / elapsed,
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
    parser.add_argument("--mode", choices=("unary", "stream"), default="unary")
    parser.add_argument("--refused", choices=("retry", "back-off"), default="retry")
    args = parser.parse_args()
    payload = base64.b64decode(args.payload)
    work = drive(args.url, payload, args.concurrency, args.seconds, args.warmup, args.mode, args.refused)
    try:
        import uvloop

        result = uvloop.run(work)
    except ImportError:
        result = asyncio.run(work)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
