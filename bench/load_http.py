"""The HTTP twin of ``bench.load``: ``concurrency`` keep-alive HTTP/1.1 connections, each posting
the next request as soon as the last answer arrived, for ``seconds``; prints one JSON line.

The request (line, headers, body) is built once and written as bytes; an answer is read up to its
``Content-Length`` and only its status line is looked at, so the client spends as little CPU as it
can (what ``wrk``-like load tools do), and its own CPU use is reported.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import time

from bench.load import summary


def http_request(path: str, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: bench", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def drive(
    host: str, port: int, request: bytes, concurrency: int, seconds: float, warmup: float
) -> dict:
    latencies: list[int] = []
    errors = 0
    measuring = False
    stop_at = 0.0

    async def caller() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while True:
                t0 = time.perf_counter_ns()
                if t0 / 1e9 >= stop_at:
                    return
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                await reader.readexactly(length)
                if not head.startswith(b"HTTP/1.1 200"):
                    errors += 1
                    continue
                if measuring:
                    latencies.append(time.perf_counter_ns() - t0)
        finally:
            writer.close()

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
    return summary(latencies, errors, elapsed, cpu0, cpu1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True, help="host:port of the HTTP door")
    parser.add_argument("--request", required=True, help="base64 of the whole HTTP request")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    args = parser.parse_args()
    host, _, port = args.url.rpartition(":")
    work = drive(host, int(port), base64.b64decode(args.request), args.concurrency, args.seconds, args.warmup)
    try:
        import uvloop

        result = uvloop.run(work)
    except ImportError:
        result = asyncio.run(work)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
