"""RedisSource against the real Redis: batching, defaults, conversion, staleness, faults, recovery."""

from __future__ import annotations

import asyncio
import socket
import time

import numpy as np
import pytest
import redis.asyncio as aioredis

from adapters.redis import RedisSource
from engine.errors import DependencyUnavailable
from engine.interfaces import FeatureField, FeatureStatus
from engine.tensors import DataType
from tests.adapters.proxy import StallingProxy

AGE = FeatureField("age_days", DataType.FP32, default=-1.0)
TXN = FeatureField("txn_24h", DataType.INT64, default=0)
TIER = FeatureField("tier", DataType.BYTES, default=b"none")


class CountingConnection(aioredis.Connection):
    """Counts writes to the socket: one pipeline is one ``send_packed_command``."""

    sends = 0

    async def send_packed_command(self, command, check_health=True):  # type: ignore[no-untyped-def]
        CountingConnection.sends += 1
        await super().send_packed_command(command, check_health)


async def _seed(admin: aioredis.Redis, prefix: str, n: int) -> None:
    async with admin.pipeline(transaction=False) as pipe:
        for i in range(n):
            pipe.hset(f"{prefix}user:{i}", mapping={"age_days": i * 1.5, "txn_24h": i, "tier": f"t{i % 3}"})
        await pipe.execute()


async def test_batch_fetch_is_one_round_trip(redis_admin, redis_url, prefix) -> None:
    await _seed(redis_admin, prefix, 100)
    source = RedisSource(
        "users", redis_url, key_template=prefix + "user:{key}", connection_class=CountingConnection
    )
    keys = [str(i) for i in range(100)]
    try:
        await source.fetch(keys[:1], [AGE])  # warm: dial and handshake
        before_sends = CountingConnection.sends
        stats_before = (await redis_admin.info("commandstats")).get("cmdstat_hmget", {}).get("calls", 0)
        batch = await source.fetch(keys, [AGE, TXN, TIER])
        stats_after = (await redis_admin.info("commandstats")).get("cmdstat_hmget", {}).get("calls", 0)
        assert CountingConnection.sends - before_sends == 1
        assert stats_after - stats_before >= 100  # one HMGET per key (other clients may add more)
    finally:
        await source.close()
    np.testing.assert_array_equal(batch.values["age_days"], np.arange(100, dtype=np.float32) * 1.5)
    np.testing.assert_array_equal(batch.values["txn_24h"], np.arange(100, dtype=np.int64))
    assert batch.values["txn_24h"].dtype == np.int64
    assert list(batch.values["tier"][:4]) == [b"t0", b"t1", b"t2", b"t0"]
    assert batch.status.shape == (100, 3) and batch.status.dtype == np.uint8
    assert (batch.status == FeatureStatus.PRESENT).all()


async def test_missing_keys_and_fields_get_defaults(redis_admin, redis_url, prefix) -> None:
    await redis_admin.hset(f"{prefix}user:a", mapping={"age_days": "12.5"})
    source = RedisSource("users", redis_url, key_template=prefix + "user:{key}")
    try:
        batch = await source.fetch(["a", b"nobody", "a"], [AGE, TXN])
    finally:
        await source.close()
    np.testing.assert_array_equal(batch.values["age_days"], np.array([12.5, -1.0, 12.5], dtype=np.float32))
    np.testing.assert_array_equal(batch.values["txn_24h"], [0, 0, 0])
    assert batch.status.tolist() == [
        [FeatureStatus.PRESENT, FeatureStatus.MISSING],
        [FeatureStatus.MISSING, FeatureStatus.MISSING],
        [FeatureStatus.PRESENT, FeatureStatus.MISSING],
    ]


async def test_unconvertible_values_fail_per_cell(redis_admin, redis_url, prefix) -> None:
    await redis_admin.hset(f"{prefix}user:x", mapping={"age_days": "old", "txn_24h": "3.5", "tier": b"\xff"})
    await redis_admin.set(f"{prefix}user:notahash", "string")
    source = RedisSource("users", redis_url, key_template=prefix + "user:{key}")
    try:
        batch = await source.fetch(["x", "notahash"], [AGE, TXN, TIER])
    finally:
        await source.close()
    assert batch.values["age_days"][0] == -1.0 and batch.values["txn_24h"][0] == 0
    assert batch.values["tier"][0] == b"\xff"  # BYTES take any bytes
    assert batch.status[0].tolist() == [FeatureStatus.FAILED, FeatureStatus.FAILED, FeatureStatus.PRESENT]
    assert batch.status[1].tolist() == [FeatureStatus.FAILED] * 3  # WRONGTYPE for that key only


async def test_stale_rows_get_defaults(redis_admin, redis_url, prefix) -> None:
    now = time.time()
    await redis_admin.hset(f"{prefix}user:fresh", mapping={"age_days": 1, "ts": now - 5})
    await redis_admin.hset(f"{prefix}user:old", mapping={"age_days": 2, "ts": now - 3600})
    await redis_admin.hset(f"{prefix}user:iso", mapping={"age_days": 3, "ts": "2001-01-01T00:00:00Z"})
    source = RedisSource("users", redis_url, key_template=prefix + "user:{key}", timestamp_field="ts")
    try:
        batch = await source.fetch(["fresh", "old", "iso", "none"], [AGE], max_age_s=60)
        unbounded = await source.fetch(["old"], [AGE])
    finally:
        await source.close()
    assert batch.values["age_days"].tolist() == [1.0, -1.0, -1.0, -1.0]
    assert batch.status[:, 0].tolist() == [
        FeatureStatus.PRESENT,
        FeatureStatus.STALE,
        FeatureStatus.STALE,
        FeatureStatus.MISSING,
    ]
    assert unbounded.values["age_days"].tolist() == [2.0]


async def test_stalled_store_is_cut_off_and_recovers(redis_admin, redis_url, prefix) -> None:
    await redis_admin.hset(f"{prefix}user:1", mapping={"age_days": 7})
    proxy = await StallingProxy("127.0.0.1", 6379).start()
    source = RedisSource(  # a socket timeout far above the caller's: the caller's must cut it off
        "users", f"redis://127.0.0.1:{proxy.port}/0", key_template=prefix + "user:{key}", socket_timeout_s=10
    )
    try:
        assert (await source.fetch(["1"], [AGE])).values["age_days"][0] == 7
        proxy.stall()
        started = time.perf_counter()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await source.fetch(["1"], [AGE])
        assert time.perf_counter() - started < 5
        proxy.resume()
        batch = await source.fetch(["1"], [AGE])
        assert batch.values["age_days"][0] == 7 and batch.status[0, 0] == FeatureStatus.PRESENT
    finally:
        await source.close()
        await proxy.close()


async def test_socket_timeout_maps_to_unavailable(redis_url, prefix) -> None:
    proxy = await StallingProxy("127.0.0.1", 6379).start()
    source = RedisSource(
        "users", f"redis://127.0.0.1:{proxy.port}/0", key_template=prefix + "{key}", socket_timeout_s=0.1
    )
    try:
        await source.fetch(["1"], [AGE])
        proxy.stall()
        with pytest.raises(DependencyUnavailable, match="timed out"):
            await source.fetch(["1"], [AGE])
    finally:
        await source.close()
        await proxy.close()


async def test_closed_port_is_unavailable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    source = RedisSource("users", f"redis://127.0.0.1:{port}/0")
    try:
        started = time.perf_counter()
        with pytest.raises(DependencyUnavailable, match="users") as info:
            await source.fetch(["1"], [AGE])
        assert time.perf_counter() - started < 2.0
        assert info.value.__cause__ is not None
    finally:
        await source.close()


async def test_recovers_after_server_drops_connections(redis_admin, redis_url, prefix) -> None:
    await redis_admin.hset(f"{prefix}user:1", mapping={"age_days": 9})
    name = f"kill-{prefix}"
    source = RedisSource(name, redis_url, key_template=prefix + "user:{key}")
    try:
        await asyncio.gather(*(source.fetch(["1"], [AGE]) for _ in range(4)))  # several pooled connections
        clients = await redis_admin.client_list()
        ours = [c["id"] for c in clients if c.get("name") == f"engine-features:{name}"]
        assert ours
        for client_id in ours:
            await redis_admin.client_kill_filter(_id=client_id)
        for _ in range(6):  # every pooled connection is dead; each fetch still succeeds
            batch = await source.fetch(["1"], [AGE])
            assert batch.values["age_days"][0] == 9
    finally:
        await source.close()
