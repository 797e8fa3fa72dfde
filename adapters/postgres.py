"""PostgreSQL: one parameterised query per batch over an asyncpg pool.

``SELECT "key", "f1", "f2" FROM "schema"."table" WHERE "key" = ANY($1)``: the keys
travel as one array parameter, never as SQL text. Table, column and field names come
from the server config and the graph; they must be plain identifiers and are quoted.
The pool is created on the first fetch (the source is built synchronously from the
config); connections the server dropped (restart, ``pg_terminate_backend``) fail one
query, which is retried once on a fresh connection. A database that cannot be reached
raises ``DependencyUnavailable``.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping, Sequence

import asyncpg

from adapters.base import STALE, BatchBuilder, check_fields, is_stale, key_text, unavailable
from engine.interfaces import FeatureBatch, FeatureField
from engine.tensors import DataType

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_INT_ARRAYS = {"_int2", "_int4", "_int8", "int2[]", "int4[]", "int8[]"}
# Errors that mean "this connection (or the server) is gone": retry once, then unavailable.
_CONNECTION_ERRORS = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
)


def quote_identifier(name: str) -> str:
    """``name`` double-quoted, after checking it is a plain identifier (``schema.table`` allowed)."""
    parts = name.split(".")
    if len(parts) > 2 or not all(_IDENTIFIER.match(p) for p in parts):
        raise ValueError(f"'{name}' is not a plain SQL identifier (letters, digits, _; at most schema.table)")
    return ".".join(f'"{p}"' for p in parts)


class PostgresSource:
    """A ``FeatureSource`` over one table: a row per entity, a column per field."""

    def __init__(
        self,
        name: str,
        dsn: str,
        *,
        table: str,
        key_column: str,
        timestamp_column: str | None = None,
        password: str | None = None,
        pool_min: int = 1,
        pool_max: int = 10,
        connect_timeout_s: float = 1.0,
        command_timeout_s: float | None = 5.0,
        schema: Mapping[str, DataType] | None = None,
        connection_class: type[asyncpg.Connection] = asyncpg.Connection,
    ) -> None:
        self.name = name
        self.dsn = dsn
        self._connection_class = connection_class
        self.table = table
        self.key_column = key_column
        self.timestamp_column = timestamp_column
        self._from = quote_identifier(table)
        self._key = quote_identifier(key_column)
        self._ts = quote_identifier(timestamp_column) if timestamp_column else None
        self._password = password
        self._pool_min, self._pool_max = pool_min, pool_max
        self._connect_timeout_s = connect_timeout_s
        self._command_timeout_s = command_timeout_s
        self._schema = dict(schema) if schema is not None else None
        self._pool: asyncpg.Pool | None = None
        self._pool_lock = asyncio.Lock()
        self._queries: dict[tuple[tuple[str, ...], bool], str] = {}
        self._int_keys: bool | None = None  # learnt from the key column's type on the first query

    def __repr__(self) -> str:
        return f"PostgresSource({self.name!r}, table={self.table!r}, key_column={self.key_column!r})"

    def schema(self) -> Mapping[str, DataType] | None:
        return self._schema

    def query(self, names: Sequence[str], with_timestamp: bool) -> str:
        """The batch query for these fields (built once per field set)."""
        cache_key = (tuple(names), with_timestamp)
        text = self._queries.get(cache_key)
        if text is None:
            columns = [self._key, *(quote_identifier(n) for n in names)]
            if with_timestamp and self._ts:
                columns.append(self._ts)
            text = f"SELECT {', '.join(columns)} FROM {self._from} WHERE {self._key} = ANY($1)"
            self._queries[cache_key] = text
        return text

    async def _get_pool(self) -> asyncpg.Pool:
        if self._pool is not None:
            return self._pool
        async with self._pool_lock:
            if self._pool is None:
                self._pool = await asyncpg.create_pool(
                    self.dsn,
                    password=self._password,
                    min_size=self._pool_min,
                    max_size=self._pool_max,
                    timeout=self._connect_timeout_s,
                    command_timeout=self._command_timeout_s,
                    server_settings={"application_name": f"engine-features:{self.name}"},
                    connection_class=self._connection_class,
                )
        return self._pool

    async def fetch(
        self, keys: Sequence[str], fields: Sequence[FeatureField], *, max_age_s: float | None = None
    ) -> FeatureBatch:
        check_fields(fields)
        builder = BatchBuilder(len(keys), fields)
        if not keys or not fields:
            return builder.build()
        with_ts = self._ts is not None and max_age_s is not None
        sql = self.query([f.name for f in fields], with_ts)
        texts = [key_text(k) for k in keys]
        records = await self._run(sql, texts)
        rows: dict[str, list[int]] = {}
        for i, text in enumerate(texts):
            rows.setdefault(text, []).append(i)
        n_fields = len(fields)
        for record in records:
            for row in rows.get(key_text(record[0]), ()):
                if with_ts and is_stale(record[n_fields + 1], max_age_s):
                    builder.mark_row(row, STALE)
                else:
                    builder.put_row(row, record[1 : n_fields + 1])
        return builder.build()

    async def _run(self, sql: str, texts: list[str]) -> list[asyncpg.Record]:
        for attempt in (1, 2):
            try:
                pool = await self._get_pool()
                conn = await pool.acquire()
                try:
                    if self._int_keys is None:
                        statement = await conn.prepare(sql)
                        self._int_keys = statement.get_parameters()[0].name in _INT_ARRAYS
                    records: list[asyncpg.Record] = await conn.fetch(sql, self._key_values(texts))
                except (asyncio.CancelledError, TimeoutError):
                    # Cut off mid-query (node timeout): a graceful release would wait for the server
                    # to acknowledge a cancel request (seconds on a hung store); drop the connection.
                    conn.terminate()
                    raise
                finally:
                    await pool.release(conn)
                return records
            except _CONNECTION_ERRORS as exc:
                if attempt == 2 or self._pool is None:
                    raise unavailable(self.name, "postgres unreachable", exc) from exc
            except TimeoutError as exc:
                raise unavailable(self.name, "postgres timed out", exc) from exc
            except asyncpg.PostgresError as exc:  # undefined table/column, permissions: the config is wrong
                raise unavailable(
                    self.name, "query failed (table, columns or permissions do not match the config)", exc
                ) from exc
        raise AssertionError("unreachable")

    def _key_values(self, texts: list[str]) -> list[str] | list[int]:
        if not self._int_keys:
            return texts
        values: list[int] = []
        for text in texts:
            try:
                values.append(int(text))
            except ValueError:
                continue  # cannot exist in an integer column: stays MISSING
        return values

    async def warm(self) -> None:
        """Create the connection pool now (start-up), so the first request does not pay for it."""
        await self._get_pool()

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
