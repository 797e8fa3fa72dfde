"""Fixtures for the adapter tests: the real Redis and PostgreSQL on this machine, isolated per test.

Each Redis test gets its own key prefix (deleted afterwards); each Postgres test its own table
(dropped afterwards). Override the servers with ``TEST_REDIS_URL`` / ``TEST_PG_DSN``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
import redis.asyncio as aioredis

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
PG_DSN = os.environ.get("TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture
def redis_url() -> str:
    return REDIS_URL


@pytest.fixture
def pg_dsn() -> str:
    return PG_DSN


@pytest.fixture
async def redis_admin() -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(REDIS_URL)
    yield client
    await client.aclose()


@pytest.fixture
async def prefix(redis_admin: aioredis.Redis) -> AsyncIterator[str]:
    """A key prefix of this test's own; every key under it is deleted afterwards."""
    value = f"test:adapters:{uuid.uuid4().hex[:12]}:"
    yield value
    keys = [k async for k in redis_admin.scan_iter(match=value + "*", count=1000)]
    if keys:
        await redis_admin.delete(*keys)


@pytest.fixture
async def pg_admin() -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(PG_DSN)
    yield conn
    await conn.close()


@pytest.fixture
async def pg_table(pg_admin: asyncpg.Connection) -> AsyncIterator[str]:
    """A table name of this test's own; dropped afterwards."""
    name = f"feat_{uuid.uuid4().hex[:12]}"
    yield name
    await pg_admin.execute(f'DROP TABLE IF EXISTS "{name}"')
