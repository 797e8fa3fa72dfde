"""PostgresSource against the real PostgreSQL: one query per batch, defaults, staleness, faults, recovery."""

from __future__ import annotations

import asyncio
import socket
import time
from datetime import UTC, datetime, timedelta

import asyncpg
import numpy as np
import pytest

from adapters.postgres import PostgresSource, quote_identifier
from engine.errors import DependencyUnavailable
from engine.interfaces import FeatureField, FeatureStatus
from engine.tensors import DataType
from tests.adapters.proxy import StallingProxy

ORDERS = FeatureField("orders_30m", DataType.INT32, default=-1)
RATING = FeatureField("rating", DataType.FP32, default=0.0)
CITY = FeatureField("city", DataType.BYTES, default=b"?")


class CountingConnection(asyncpg.Connection):
    """Records the statements the source sends."""

    statements: list[tuple[str, tuple]] = []

    async def fetch(self, query, *args, timeout=None, record_class=None):  # type: ignore[no-untyped-def]  # noqa: ASYNC109
        CountingConnection.statements.append((query, args))
        return await super().fetch(query, *args, timeout=timeout, record_class=record_class)


async def _create(pg_admin, table: str, n: int, key_type: str = "text", age_s: float = 0.0) -> None:
    await pg_admin.execute(
        f'CREATE TABLE "{table}" (id {key_type} PRIMARY KEY, orders_30m bigint, rating double precision,'
        " city text, note text, updated_at timestamptz)"
    )
    stamp = datetime.now(UTC) - timedelta(seconds=age_s)
    rows = [(i if key_type != "text" else str(i), i, i / 10, f"c{i}", "x", stamp) for i in range(n)]
    await pg_admin.executemany(f'INSERT INTO "{table}" VALUES ($1, $2, $3, $4, $5, $6)', rows)


async def test_batch_fetch_is_one_query(pg_admin, pg_dsn, pg_table) -> None:
    await _create(pg_admin, pg_table, 50)
    source = PostgresSource(
        "shops", pg_dsn, table=pg_table, key_column="id", connection_class=CountingConnection
    )
    keys = [str(i) for i in range(50)] + ["nope", "3"]
    try:
        CountingConnection.statements.clear()
        batch = await source.fetch(keys, [ORDERS, RATING, CITY])
    finally:
        await source.close()
    [(sql, args)] = CountingConnection.statements
    assert sql == (f'SELECT "id", "orders_30m", "rating", "city" FROM "{pg_table}" WHERE "id" = ANY($1)')
    assert args == (keys,)
    assert batch.values["orders_30m"].dtype == np.int32
    assert batch.values["orders_30m"].tolist() == [*range(50), -1, 3]
    np.testing.assert_allclose(batch.values["rating"][:50], np.arange(50) / 10, rtol=1e-6)
    assert batch.values["city"][3] == b"c3" and batch.values["city"][50] == b"?"
    assert (batch.status[:50] == FeatureStatus.PRESENT).all()
    assert (batch.status[50] == FeatureStatus.MISSING).all()
    assert (batch.status[51] == FeatureStatus.PRESENT).all()


async def test_integer_keys_nulls_and_bad_values(pg_admin, pg_dsn, pg_table) -> None:
    await _create(pg_admin, pg_table, 3, key_type="bigint")
    await pg_admin.execute(
        f'UPDATE "{pg_table}" SET orders_30m = NULL, note = $1 WHERE id = 1', "not a number"
    )
    note = FeatureField("note", DataType.FP64, default=-2.0)
    source = PostgresSource("shops", pg_dsn, table=pg_table, key_column="id")
    try:
        batch = await source.fetch(["1", "2", "abc"], [ORDERS, note])
    finally:
        await source.close()
    assert batch.values["orders_30m"].tolist() == [-1, 2, -1]
    assert batch.status.tolist() == [
        [FeatureStatus.MISSING, FeatureStatus.FAILED],
        [FeatureStatus.PRESENT, FeatureStatus.FAILED],
        [FeatureStatus.MISSING, FeatureStatus.MISSING],
    ]
    assert batch.values["note"].tolist() == [-2.0, -2.0, -2.0]


async def test_stale_rows(pg_admin, pg_dsn, pg_table) -> None:
    await _create(pg_admin, pg_table, 2, age_s=120)
    source = PostgresSource("shops", pg_dsn, table=pg_table, key_column="id", timestamp_column="updated_at")
    try:
        stale = await source.fetch(["0", "1"], [ORDERS], max_age_s=60)
        fresh = await source.fetch(["0", "1"], [ORDERS], max_age_s=600)
    finally:
        await source.close()
    assert (stale.status == FeatureStatus.STALE).all() and stale.values["orders_30m"].tolist() == [-1, -1]
    assert (fresh.status == FeatureStatus.PRESENT).all() and fresh.values["orders_30m"].tolist() == [0, 1]


def test_identifiers_are_checked() -> None:
    assert quote_identifier("public.users") == '"public"."users"'
    for bad in ('users"; DROP TABLE x; --', "a b", "a.b.c", "", "1abc"):
        with pytest.raises(ValueError, match="identifier"):
            quote_identifier(bad)
    source = PostgresSource("s", "postgresql://x", table="t", key_column="id")
    with pytest.raises(ValueError, match="identifier"):
        source.query(["ok", 'x" FROM pg_shadow --'], False)


async def test_missing_table_is_unavailable(pg_dsn, pg_table) -> None:
    source = PostgresSource("shops", pg_dsn, table=pg_table, key_column="id")
    try:
        with pytest.raises(DependencyUnavailable, match="query failed"):
            await source.fetch(["1"], [ORDERS])
    finally:
        await source.close()


async def test_closed_port_is_unavailable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    source = PostgresSource(
        "shops", f"postgresql://postgres@127.0.0.1:{port}/test", table="t", key_column="id"
    )
    try:
        with pytest.raises(DependencyUnavailable, match="unreachable") as info:
            await source.fetch(["1"], [ORDERS])
        assert info.value.__cause__ is not None
    finally:
        await source.close()


async def test_recovers_after_backends_are_terminated(pg_admin, pg_dsn, pg_table) -> None:
    await _create(pg_admin, pg_table, 3)
    name = f"kill-{pg_table}"
    source = PostgresSource("x", pg_dsn, table=pg_table, key_column="id", pool_min=3, pool_max=3)
    source.name = name  # application_name is taken when the pool is made
    try:
        await asyncio.gather(*(source.fetch(["1"], [ORDERS]) for _ in range(3)))
        killed = await pg_admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
            f"engine-features:{name}",
        )
        assert killed >= 1
        await asyncio.sleep(0.05)
        for _ in range(4):
            batch = await source.fetch(["1", "2"], [ORDERS])
            assert batch.values["orders_30m"].tolist() == [1, 2]
    finally:
        await source.close()


async def test_stalled_database_is_cut_off_and_recovers(pg_admin, pg_dsn, pg_table) -> None:
    await _create(pg_admin, pg_table, 2)
    proxy = await StallingProxy("127.0.0.1", 5432).start()
    source = PostgresSource(
        "shops", f"postgresql://postgres@127.0.0.1:{proxy.port}/test", table=pg_table, key_column="id"
    )
    try:
        await source.fetch(["1"], [ORDERS])
        proxy.stall()
        started = time.perf_counter()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await source.fetch(["1"], [ORDERS])
        assert time.perf_counter() - started < 3  # not the 5 s command timeout
        proxy.resume()
        batch = await source.fetch(["0", "1"], [ORDERS])
        assert batch.values["orders_30m"].tolist() == [0, 1]
    finally:
        await source.close()
        await proxy.close()
