"""Redis: one hash per entity, read with one pipelined round trip per batch.

Layout: ``HSET user:42 age_days 310 txn_24h 3 updated_at 1718000000``. A fetch of
``n`` keys sends ``n`` ``HMGET`` commands in one pipeline (``transaction=False``, so
no MULTI/EXEC) and reads the ``n`` replies. Connections come from a blocking pool
with explicit connect and socket timeouts; redis-py's own retries are off, we retry
a read once on a dropped connection (reads are idempotent), which is what makes a
Redis restart or ``CLIENT KILL`` invisible to requests. A store that cannot be
reached raises ``DependencyUnavailable``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from adapters.base import FAILED, STALE, BatchBuilder, check_fields, is_stale, key_text, unavailable
from engine.interfaces import FeatureBatch, FeatureField
from engine.tensors import DataType


class RedisSource:
    """A ``FeatureSource`` over Redis hashes named by ``key_template`` (``{key}`` is the entity key)."""

    def __init__(
        self,
        name: str,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        key_template: str = "user:{key}",
        timestamp_field: str | None = None,
        password: str | None = None,
        pool_size: int = 32,
        pool_timeout_s: float = 1.0,
        socket_timeout_s: float = 1.0,
        connect_timeout_s: float = 0.5,
        schema: Mapping[str, DataType] | None = None,
        connection_class: type[aioredis.Connection] | None = None,
    ) -> None:
        if "{key}" not in key_template:
            raise ValueError(f"key_template '{key_template}' must contain '{{key}}'")
        self.name = name
        self.url = url
        self.key_template = key_template
        self.timestamp_field = timestamp_field
        self._prefix, _, self._suffix = key_template.partition("{key}")
        self._schema = dict(schema) if schema is not None else None
        extra: dict[str, object] = {}
        if password is not None:
            extra["password"] = password
        if connection_class is not None:
            extra["connection_class"] = connection_class
        self._pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=pool_size,
            timeout=pool_timeout_s,
            socket_timeout=socket_timeout_s,
            socket_connect_timeout=connect_timeout_s,
            socket_keepalive=True,
            client_name=f"engine-features:{name}",
            retry=Retry(NoBackoff(), 0),
            **extra,
        )
        self._client = aioredis.Redis(connection_pool=self._pool)

    def __repr__(self) -> str:
        return f"RedisSource({self.name!r}, {self.url!r}, key_template={self.key_template!r})"

    def schema(self) -> Mapping[str, DataType] | None:
        return self._schema

    def redis_key(self, key: object) -> str:
        """The hash name for one entity key."""
        return f"{self._prefix}{key_text(key)}{self._suffix}"

    async def fetch(
        self, keys: Sequence[str], fields: Sequence[FeatureField], *, max_age_s: float | None = None
    ) -> FeatureBatch:
        check_fields(fields)
        builder = BatchBuilder(len(keys), fields)
        if not keys or not fields:
            return builder.build()
        names = [f.name for f in fields]
        ts_field = self.timestamp_field if max_age_s is not None else None
        with_ts = ts_field is not None
        if ts_field is not None:
            names.append(ts_field)
        rows = await self._hmget_all([self.redis_key(k) for k in keys], names)
        n_fields = len(fields)
        replies = [v for v in rows if isinstance(v, list)]
        if not with_ts and len(replies) == len(rows):  # the common case: column by column
            for col in range(n_fields):
                builder.put_column(col, [values[col] for values in replies])
            return builder.build()
        for row, values in enumerate(rows):
            if isinstance(values, Exception):  # e.g. WRONGTYPE: this key is not a hash
                builder.mark_row(row, FAILED)
                continue
            if with_ts and any(v is not None for v in values[:n_fields]) and is_stale(values[-1], max_age_s):
                builder.mark_row(row, STALE)
                continue
            builder.put_row(row, values[:n_fields])
        return builder.build()

    async def _hmget_all(self, hashes: list[str], names: list[str]) -> list[list[bytes | None] | Exception]:
        for attempt in (1, 2):
            try:
                async with self._client.pipeline(transaction=False) as pipe:
                    for h in hashes:
                        pipe.hmget(h, names)
                    return await pipe.execute(raise_on_error=False)
            except RedisTimeoutError as exc:
                raise unavailable(self.name, "redis timed out", exc) from exc
            except RedisConnectionError as exc:
                # A connection the server dropped (restart, CLIENT KILL) fails once; a new one is dialled.
                if attempt == 2:
                    raise unavailable(self.name, "redis unreachable", exc) from exc
            except (RedisError, OSError) as exc:
                raise unavailable(self.name, "redis failed", exc) from exc
        raise AssertionError("unreachable")

    async def warm(self) -> None:
        """Open a pooled connection now (start-up), so the first request does not pay for it."""
        await self._client.ping()

    async def close(self) -> None:
        await self._client.aclose()
        await self._pool.disconnect()
