"""A TTL cache in front of any feature source (aiocache; in memory by default, Redis optional).

Entries are per entity and keyed by (source name, field set, key), so two nodes asking
the same source for different fields never share an entry. A fetch looks every key up
in one ``multi_get``, asks the wrapped source once for the keys it did not find, and
stores what came back in one ``multi_set``. Values served from the cache have status
CACHED; a field the store did not have stays MISSING (the absence is cached too, for
the same ttl). Rows that were STALE, FAILED or TIMED_OUT are never cached. A cache backend that is
down (Redis) is skipped: the fetch goes to the wrapped source and ``cache_errors`` counts it.

The in-memory backend holds at most ``max_entries`` entities (default ``DEFAULT_MAX_ENTRIES``):
past that the least recently used are evicted (``evictions`` counts them), so a stream of new
keys cannot grow the process without bound. Expired entries are dropped when read or evicted.

A miss is filled once per key (single flight): while one fetch asks the wrapped source for a key,
every other fetch missing the same entry waits for that answer instead of asking again (200
concurrent requests for one expired key make one store round trip; ``coalesced`` counts the
rows that waited). Waiters share the answer whatever its statuses (a store that is down is asked
once, not once per caller); if the fetch that owns a key is cancelled or raises (its node
timed out), its waiters ask the store themselves.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections import OrderedDict
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import urlparse

import numpy as np
from aiocache.backends.redis import RedisCache
from aiocache.serializers import BaseSerializer
from redis.exceptions import RedisError

from adapters.base import CACHED, MISSING, PRESENT, BatchBuilder, check_fields, key_text
from engine.interfaces import FeatureBatch, FeatureField, FeatureSource
from engine.tensors import DataType

CachedRow = tuple[object, ...]  # one entity: a value per field, None where the store had none
_T = TypeVar("_T")
DEFAULT_MAX_ENTRIES = 100_000


class BoundedMemoryCache:
    """An LRU of at most ``max_entries`` rows with a deadline each (``time.monotonic``); the
    ``multi_get``/``multi_set`` calls of aiocache's backends, with no timer per key."""

    def __init__(self, max_entries: int) -> None:
        if max_entries < 1:
            raise ValueError(f"cache max_entries must be at least 1, got {max_entries}")
        self.max_entries = max_entries
        self.evictions = 0
        self._rows: OrderedDict[str, tuple[float, CachedRow]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._rows)

    async def multi_get(self, keys: Sequence[str]) -> list[CachedRow | None]:
        now = time.monotonic()
        rows = self._rows
        found: list[CachedRow | None] = []
        for key in keys:
            entry = rows.get(key)
            if entry is None or entry[0] <= now:
                if entry is not None:
                    del rows[key]
                found.append(None)
            else:
                rows.move_to_end(key)
                found.append(entry[1])
        return found

    async def multi_set(self, pairs: Sequence[tuple[str, CachedRow]], ttl: float) -> None:
        expires = time.monotonic() + ttl
        rows = self._rows
        for key, row in pairs:
            rows[key] = (expires, row)
            rows.move_to_end(key)
        while len(rows) > self.max_entries:
            rows.popitem(last=False)
            self.evictions += 1

    async def clear(self) -> None:
        self._rows.clear()

    async def close(self) -> None:
        self._rows.clear()


class RowSerializer(BaseSerializer):  # type: ignore[misc]  # aiocache ships no type information
    """JSON for cached rows in Redis (never pickle: a shared cache must not run code); bytes as base64."""

    DEFAULT_ENCODING = "utf-8"

    def dumps(self, value: CachedRow) -> str:
        return json.dumps([{"b": base64.b64encode(v).decode()} if isinstance(v, bytes) else v for v in value])

    def loads(self, value: str | None) -> CachedRow | None:
        if value is None:
            return None
        return tuple(base64.b64decode(v["b"]) if isinstance(v, dict) else v for v in json.loads(value))


def _make_cache(backend: str, redis_url: str | None, namespace: str, max_entries: int) -> Any:
    if backend == "memory":
        return BoundedMemoryCache(max_entries)
    if backend == "redis":
        parts = urlparse(redis_url or "redis://127.0.0.1:6379/0")
        db = int(parts.path.lstrip("/") or 0)
        return RedisCache(
            endpoint=parts.hostname or "127.0.0.1",
            port=parts.port or 6379,
            db=db,
            password=parts.password,
            serializer=RowSerializer(),
            namespace=namespace,
            timeout=None,
            create_connection_timeout=1.0,
            connection_pool_kwargs={"socket_timeout": 1.0, "client_name": f"engine-cache:{namespace}"},
        )
    raise ValueError(f"unknown cache backend '{backend}' (expected 'memory' or 'redis')")


class CachedSource:
    """Wraps ``source`` with a per-entity TTL cache; the same ``FeatureSource`` interface."""

    def __init__(
        self,
        source: FeatureSource,
        *,
        ttl_s: float,
        backend: str = "memory",
        redis_url: str | None = None,
        namespace: str = "engine-features",
        owns_source: bool = True,
        max_entries: int = DEFAULT_MAX_ENTRIES,
    ) -> None:
        if ttl_s <= 0:
            raise ValueError(f"cache ttl must be positive, got {ttl_s}")
        self.name = source.name
        self.source = source
        self.ttl_s = float(ttl_s)
        self.backend = backend
        self._cache = _make_cache(backend, redis_url, namespace, max_entries)
        self.cache_errors = 0
        self.owns_source = owns_source  # False: a per-node cache in front of a shared source
        self._field_sets: dict[tuple[tuple[str, DataType], ...], str] = {}
        # cache key -> the answer of the fetch now asking the store for it: (its batch, its row)
        self._filling: dict[str, asyncio.Future[tuple[FeatureBatch, int] | None]] = {}
        self.coalesced = 0  # missed rows answered by another fetch's round trip (single flight)

    def __repr__(self) -> str:
        return f"CachedSource({self.source!r}, ttl_s={self.ttl_s}, backend={self.backend!r})"

    def schema(self) -> Mapping[str, DataType] | None:
        return self.source.schema()

    def _prefix(self, fields: Sequence[FeatureField]) -> str:
        signature = tuple((f.name, f.datatype) for f in fields)
        prefix = self._field_sets.get(signature)
        if prefix is None:
            described = ",".join(f"{n}:{d.value}" for n, d in signature)
            prefix = self._field_sets[signature] = f"{self.name}|{described}|"
        return prefix

    async def fetch(
        self, keys: Sequence[str], fields: Sequence[FeatureField], *, max_age_s: float | None = None
    ) -> FeatureBatch:
        check_fields(fields)
        builder = BatchBuilder(len(keys), fields)
        if not keys or not fields:
            return builder.build()
        prefix = self._prefix(fields)
        cache_keys = [prefix + key_text(k) for k in keys]
        found: list[CachedRow | None] | None = await self._cache_call(self._cache.multi_get(cache_keys))
        entries = found if found is not None else [None] * len(keys)
        misses: list[int] = []
        for row, entry in enumerate(entries):
            if entry is None:
                misses.append(row)
                continue
            for col, value in enumerate(entry):
                if value is not None:
                    builder.put(row, col, value, CACHED)
        if misses:
            await self._fill(builder, misses, keys, cache_keys, fields, max_age_s)
        return builder.build()

    async def _fill(
        self,
        builder: BatchBuilder,
        misses: list[int],
        keys: Sequence[str],
        cache_keys: list[str],
        fields: Sequence[FeatureField],
        max_age_s: float | None,
    ) -> None:
        """Fetch the missed rows, once per key across every concurrent fetch (single flight)."""
        filling = self._filling
        mine: list[int] = []
        waits: list[tuple[int, asyncio.Future[tuple[FeatureBatch, int] | None]]] = []
        for row in misses:
            pending = filling.get(cache_keys[row])
            if pending is None:
                mine.append(row)
            else:
                waits.append((row, pending))
        if mine:
            await self._fetch_own(builder, mine, keys, cache_keys, fields, max_age_s)
        if not waits:
            return
        again: list[int] = []
        for row, pending in waits:
            answer = await asyncio.shield(pending)  # our own deadline may cancel us, never the owner
            if answer is None:  # the owner gave up: ask ourselves
                again.append(row)
                continue
            batch, source_row = answer
            builder.take([row], batch, [source_row])
            self.coalesced += 1
        if again:
            await self._fetch_own(builder, again, keys, cache_keys, fields, max_age_s)

    async def _fetch_own(
        self,
        builder: BatchBuilder,
        rows: list[int],
        keys: Sequence[str],
        cache_keys: list[str],
        fields: Sequence[FeatureField],
        max_age_s: float | None,
    ) -> None:
        """Ask the wrapped source for ``rows``, letting other fetches of the same keys wait on us."""
        loop = asyncio.get_running_loop()
        owned: dict[str, asyncio.Future[tuple[FeatureBatch, int] | None]] = {}
        for row in rows:
            key = cache_keys[row]
            if key not in owned and key not in self._filling:
                owned[key] = self._filling[key] = loop.create_future()
        fetched: FeatureBatch | None = None
        try:
            fetched = await self.source.fetch([keys[i] for i in rows], fields, max_age_s=max_age_s)
            builder.take(rows, fetched)
            for index, row in enumerate(rows):
                future = owned.get(cache_keys[row])
                if future is not None and not future.done():
                    future.set_result((fetched, index))
            pairs = _cacheable(fetched, fields, [cache_keys[i] for i in rows])
            if pairs:
                await self._cache_call(self._cache.multi_set(pairs, ttl=self.ttl_s))
        finally:
            for key, future in owned.items():
                if not future.done():
                    future.set_result(None)  # failed or cancelled: each waiter fetches for itself
                if self._filling.get(key) is future:
                    del self._filling[key]

    async def _cache_call(self, call: Awaitable[_T]) -> _T | None:
        """A cache operation; a cache that is down degrades to the wrapped source (counted), never fails."""
        try:
            return await call
        except (RedisError, OSError, TimeoutError):
            self.cache_errors += 1
            return None

    @property
    def evictions(self) -> int:
        """Entries the in-memory backend dropped to stay within ``max_entries`` (0 for Redis)."""
        return int(getattr(self._cache, "evictions", 0))

    async def clear(self) -> None:
        """Drop every entry of this cache's namespace."""
        await self._cache.clear()

    async def close(self) -> None:
        client = getattr(self._cache, "client", None)  # the Redis backend's client
        if client is not None:
            await client.aclose()
        else:
            await self._cache.close()
        if self.owns_source:
            await self.source.close()


def _cacheable(
    batch: FeatureBatch, fields: Sequence[FeatureField], cache_keys: list[str]
) -> list[tuple[str, CachedRow]]:
    """(cache key, row) for every row whose cells are all PRESENT or MISSING."""
    status = batch.status
    good = np.all((status == PRESENT) | (status == MISSING), axis=1)
    columns = [batch.values[f.name] for f in fields]
    pairs: list[tuple[str, CachedRow]] = []
    for row in np.flatnonzero(good):
        cells = status[row]
        entry = tuple(
            None if cells[col] == MISSING else _plain(columns[col][row]) for col in range(len(fields))
        )
        pairs.append((cache_keys[row], entry))
    return pairs


def _plain(value: object) -> object:
    return value.item() if isinstance(value, np.generic) else value
