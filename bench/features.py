"""The cost of a feature fetch per request, next to a bare redis-py pipeline doing the same read.

    .venv/bin/python -m bench.features

Against the Redis at ``BENCH_REDIS_URL`` (default redis://127.0.0.1:6379/0), in one run
and one event loop (uvloop when installed, as the server uses): for batches of 1 and 16
keys and 4 fields,

- ``bare``: ``redis.asyncio`` pipeline (``transaction=False``) of one HMGET per key, no conversion;
- ``RedisSource``: ``fetch`` uncached (the same pipeline + conversion into arrays + statuses);
- ``CachedSource``: ``fetch`` over RedisSource with every key in the in-memory cache;
- ``features node``: a compiled graph whose one node is ``features:`` over that source, run by
  ``PlanRunner`` exactly as the server runs it (key tensor in, one ``[n, 1]`` array per field
  out, node timeout armed, statuses counted), uncached and with ``cache: {ttl: 1h}`` (all hits).

Scenarios are interleaved in rounds so drift hits all alike; each figure is the median
of per-call times (µs) and the ratio is to ``bare`` at the same batch size.
Environment: BENCH_FEATURES_CALLS (calls per scenario per round, default 500),
BENCH_FEATURES_ROUNDS (default 6).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np
import redis.asyncio as aioredis

from adapters.cache import CachedSource
from adapters.redis import RedisSource
from adapters.registry import FeatureCatalog
from engine.execution import PlanRunner
from engine.graph import load_graph
from engine.interfaces import FeatureField
from engine.runtimes.onnx import OnnxRuntimeFactory
from engine.tensors import DataType

URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
CALLS = int(os.environ.get("BENCH_FEATURES_CALLS", "500"))
ROUNDS = int(os.environ.get("BENCH_FEATURES_ROUNDS", "6"))
BATCHES = (1, 16)
FIELDS = [
    FeatureField("age_days", DataType.FP32, default=0.0),
    FeatureField("txn_24h", DataType.FP32, default=0.0),
    FeatureField("chargebacks", DataType.INT64, default=0),
    FeatureField("country", DataType.BYTES, default=b"??"),
]
N_ENTITIES = 1000
RESULTS = Path(__file__).resolve().parent / "results" / "features.json"
GRAPH = """\
graph: bench_features
inputs:
  id: {datatype: BYTES, shape: [-1, 1]}
nodes:
  f:
    features: bench
    key: inputs.id
    fields:
      age_days: {datatype: FP32, default: 0}
      txn_24h: {datatype: FP32, default: 0}
      chargebacks: {datatype: INT64, default: 0}
      country: {datatype: BYTES, default: "??"}
    timeout: 1s
CACHE
outputs: {age: f.age_days, txn: f.txn_24h, chargebacks: f.chargebacks, country: f.country}
"""


def _runner(folder: Path, catalog: FeatureCatalog, cached: bool) -> PlanRunner:
    """A PlanRunner for the one-node graph above (cached: with ``cache: {ttl: 1h}``)."""
    path = folder / ("cached" if cached else "uncached") / "bench_features" / "graph.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(GRAPH.replace("CACHE", "    cache: {ttl: 1h}" if cached else ""))
    return PlanRunner(load_graph(path, OnnxRuntimeFactory(max_workers=1), catalog).plan)


async def _seed(client: aioredis.Redis, prefix: str) -> None:
    async with client.pipeline(transaction=False) as pipe:
        for i in range(N_ENTITIES):
            pipe.hset(
                f"{prefix}{i}",
                mapping={"age_days": i * 0.5, "txn_24h": i % 17, "chargebacks": i % 3, "country": "DE"},
            )
        await pipe.execute()


async def _time(call: Callable[[], Awaitable[object]], n: int, into: list[int]) -> None:
    for _ in range(n):
        start = time.perf_counter_ns()
        await call()
        into.append(time.perf_counter_ns() - start)


async def main() -> None:
    prefix = f"bench:features:{uuid.uuid4().hex[:8]}:"
    admin = aioredis.Redis.from_url(URL)
    await _seed(admin, prefix)
    bare = aioredis.Redis(
        connection_pool=aioredis.BlockingConnectionPool.from_url(
            URL, max_connections=32, socket_timeout=1.0, socket_connect_timeout=0.5
        )
    )
    source = RedisSource("bench", URL, key_template=prefix + "{key}")
    cached = CachedSource(RedisSource("bench", URL, key_template=prefix + "{key}"), ttl_s=3600)
    names = [f.name for f in FIELDS]
    results: dict[tuple[str, int], list[int]] = {}
    catalog = FeatureCatalog({"bench": RedisSource("bench", URL, key_template=prefix + "{key}")})
    folder = Path(tempfile.mkdtemp(prefix="bench-features-"))
    node, node_cached = _runner(folder, catalog, False), _runner(folder, catalog, True)
    try:
        for batch in BATCHES:
            keys = [str(i) for i in range(batch)]
            hashes = [prefix + k for k in keys]

            async def bare_read(hashes: list[str] = hashes) -> object:
                async with bare.pipeline(transaction=False) as pipe:
                    for h in hashes:
                        pipe.hmget(h, names)
                    return await pipe.execute()

            async def source_read(keys: list[str] = keys) -> object:
                return await source.fetch(keys, FIELDS)

            async def cached_read(keys: list[str] = keys) -> object:
                return await cached.fetch(keys, FIELDS)

            tensor = np.array([[k.encode()] for k in keys], dtype=np.object_)

            async def node_read(tensor: np.ndarray = tensor) -> object:
                return await node.run([tensor])

            async def node_cached_read(tensor: np.ndarray = tensor) -> object:
                return await node_cached.run([tensor])

            scenarios = {
                "bare redis-py pipeline": bare_read,
                "RedisSource": source_read,
                "CachedSource": cached_read,
                "features node (uncached)": node_read,
                "features node (cached)": node_cached_read,
            }
            for call in scenarios.values():  # warm up: connections dialled, cache filled
                await _time(call, 50, [])
            for _ in range(ROUNDS):
                for label, call in scenarios.items():
                    await _time(call, CALLS, results.setdefault((label, batch), []))
    finally:
        keys_left = [k async for k in admin.scan_iter(match=prefix + "*", count=1000)]
        if keys_left:
            await admin.delete(*keys_left)
        for client in (admin, bare):
            await client.aclose()
        await source.close()
        await cached.close()
        await catalog.close()
    _print(results)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                f"{label} | batch {b}": round(statistics.median(times) / 1000, 2)
                for (label, b), times in results.items()
            },
            indent=1,
        )
    )


def _print(results: dict[tuple[str, int], list[int]]) -> None:
    labels = list(dict.fromkeys(label for label, _ in results))
    print(f"feature fetch, Redis {URL}, {len(FIELDS)} fields, {ROUNDS}x{CALLS} calls per cell (median µs)")
    header = f"{'scenario':<26}" + "".join(f"{f'batch {b}':>12}{'ratio':>8}" for b in BATCHES)
    print(header)
    print("-" * len(header))
    for label in labels:
        row = f"{label:<26}"
        for b in BATCHES:
            median = statistics.median(results[(label, b)]) / 1000
            base = statistics.median(results[(labels[0], b)]) / 1000
            row += f"{median:>12.1f}{median / base:>7.2f}x"
        print(row)


if __name__ == "__main__":
    try:
        import uvloop
    except ImportError:
        asyncio.run(main())
    else:
        uvloop.run(main())
