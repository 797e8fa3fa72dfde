"""CachedSource: hits come back CACHED, misses go to the store in one call, entries expire."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

import numpy as np

from adapters.base import BatchBuilder
from adapters.cache import CachedSource
from adapters.redis import RedisSource
from engine.interfaces import FeatureBatch, FeatureField, FeatureStatus
from engine.tensors import DataType

AGE = FeatureField("age_days", DataType.FP32, default=-1.0)
TIER = FeatureField("tier", DataType.BYTES, default=b"none")


class Recording:
    """A FeatureSource that records each call: a double for the *wrapped* source, not the store under test."""

    name = "rec"

    def __init__(self, inner) -> None:
        self.inner = inner
        self.calls: list[list[str]] = []

    def schema(self) -> Mapping[str, DataType] | None:
        return None

    async def fetch(
        self, keys: Sequence[str], fields: Sequence[FeatureField], *, max_age_s=None
    ) -> FeatureBatch:
        self.calls.append(list(keys))
        return await self.inner.fetch(keys, fields, max_age_s=max_age_s)

    async def close(self) -> None:
        await self.inner.close()


async def test_hits_misses_and_expiry_over_real_redis(redis_admin, redis_url, prefix) -> None:
    await redis_admin.hset(f"{prefix}user:1", mapping={"age_days": 1.5, "tier": "gold"})
    await redis_admin.hset(f"{prefix}user:2", mapping={"age_days": 2.5})
    store = Recording(RedisSource("users", redis_url, key_template=prefix + "user:{key}"))
    cached = CachedSource(store, ttl_s=0.3)
    try:
        first = await cached.fetch(["1", "2", "3"], [AGE, TIER])
        assert (first.status[:2, 0] == FeatureStatus.PRESENT).all()
        second = await cached.fetch(["1", "2", "3", "4"], [AGE, TIER])
        assert store.calls == [["1", "2", "3"], ["4"]]  # only the new key went to the store
        np.testing.assert_array_equal(second.values["age_days"], np.array([1.5, 2.5, -1, -1], np.float32))
        assert second.values["tier"].tolist() == [b"gold", b"none", b"none", b"none"]
        assert second.status.tolist() == [
            [FeatureStatus.CACHED, FeatureStatus.CACHED],
            [FeatureStatus.CACHED, FeatureStatus.MISSING],  # the absence was cached, still MISSING
            [FeatureStatus.MISSING, FeatureStatus.MISSING],
            [FeatureStatus.MISSING, FeatureStatus.MISSING],
        ]
        # a different field set is a different entry
        other = await cached.fetch(["1"], [AGE])
        assert other.status[0, 0] == FeatureStatus.PRESENT and store.calls[-1] == ["1"]
        await redis_admin.hset(f"{prefix}user:1", "age_days", 9)
        assert (await cached.fetch(["1"], [AGE, TIER])).values["age_days"][0] == 1.5  # still cached
        await asyncio.sleep(0.35)
        expired = await cached.fetch(["1"], [AGE, TIER])
        assert expired.values["age_days"][0] == 9 and expired.status[0, 0] == FeatureStatus.PRESENT
    finally:
        await cached.close()


async def test_failed_and_stale_rows_are_not_cached() -> None:
    class Flaky:
        name = "flaky"
        calls = 0

        def schema(self):
            return None

        async def fetch(self, keys, fields, *, max_age_s=None):
            Flaky.calls += 1
            builder = BatchBuilder(len(keys), fields)
            builder.put(0, 0, b"not a number")
            return builder.build()

        async def close(self) -> None:
            return None

    cached = CachedSource(Flaky(), ttl_s=30)
    for _ in range(2):
        batch = await cached.fetch(["k"], [AGE])
        assert batch.status[0, 0] == FeatureStatus.FAILED
    assert Flaky.calls == 2
    await cached.close()


async def test_redis_backend_round_trips_values(redis_url, prefix) -> None:
    static = Recording(_Fixed())
    cached = CachedSource(static, ttl_s=5, backend="redis", redis_url=redis_url, namespace=prefix)
    try:
        await cached.fetch(["a", "b"], [AGE, TIER])
        batch = await cached.fetch(["a", "b"], [AGE, TIER])
        assert static.calls == [["a", "b"]]
        assert batch.values["age_days"].tolist() == [4.0, -1.0]
        assert batch.values["tier"].tolist() == [b"\x00bin\xff", b"none"]
        assert batch.status.tolist() == [[1, 1], [2, 2]]
    finally:
        await cached.clear()
        await cached.close()


async def test_cache_backend_down_degrades_to_the_source() -> None:
    cached = CachedSource(_Fixed(), ttl_s=5, backend="redis", redis_url="redis://127.0.0.1:1/0")
    batch = await cached.fetch(["a"], [AGE])
    assert batch.values["age_days"][0] == 4.0 and cached.cache_errors == 2
    await cached.close()


class _Fixed:
    name = "fixed"

    def schema(self):
        return None

    async def fetch(self, keys, fields, *, max_age_s=None):
        builder = BatchBuilder(len(keys), fields)
        for row, key in enumerate(keys):
            if key == "a":
                builder.put_row(row, [4.0, b"\x00bin\xff"][: len(fields)])
        return builder.build()

    async def close(self) -> None:
        return None


async def test_the_memory_cache_is_bounded_and_evicts_the_least_recently_used(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from adapters.static import StaticSource

    rows = "".join(f"u{i},{i}\n" for i in range(10))
    (tmp_path / "users.csv").write_text("user_id,age_days\n" + rows)
    store = Recording(StaticSource("users", tmp_path / "users.csv", key_column="user_id"))
    cached = CachedSource(store, ttl_s=3600, max_entries=3)
    try:
        await cached.fetch(["u0", "u1", "u2"], [AGE])
        await cached.fetch(["u0"], [AGE])  # u0 is now the most recently used
        await cached.fetch(["u3", "u4"], [AGE])  # room for 3: u1 and u2 go
        assert cached.evictions == 2
        store.calls.clear()
        batch = await cached.fetch(["u0", "u1", "u2", "u3", "u4"], [AGE])
        assert store.calls == [["u1", "u2"]]  # the evicted ones are read again, the rest are hits
        assert batch.status[:, 0].tolist() == [
            FeatureStatus.CACHED, FeatureStatus.PRESENT, FeatureStatus.PRESENT,
            FeatureStatus.CACHED, FeatureStatus.CACHED,
        ]  # fmt: skip
        assert batch.values["age_days"].ravel().tolist() == [0, 1, 2, 3, 4]
    finally:
        await cached.close()


def test_a_cache_bound_is_configured_per_source(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import pytest

    from adapters.registry import parse_source

    (tmp_path / "u.csv").write_text("user_id,age_days\nu1,1\n")
    entry = {"type": "static", "path": str(tmp_path / "u.csv"), "key_column": "user_id"}
    config = parse_source("users", {**entry, "cache": {"ttl": "30s", "max_entries": 500}})
    assert config.cache is not None and config.cache.max_entries == 500
    with pytest.raises(ValueError, match=r"feature_sources.users.cache.max_entries: expected a whole number"):
        parse_source("users", {**entry, "cache": {"ttl": "30s", "max_entries": 0}})
