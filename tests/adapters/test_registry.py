"""sources_from_config: the feature_sources section of engine.yaml."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from adapters import CachedSource, HttpSource, PostgresSource, RedisSource, StaticSource, sources_from_config
from adapters.registry import parse_duration, parse_source
from engine.tensors import DataType

CONFIG = """
feature_sources:
  users:
    type: redis
    url: redis://127.0.0.1:6379/0
    password_env: REDIS_PASSWORD
    key_template: "user:{key}"
    socket_timeout: 50ms
    cache: {ttl: 30s}
  shops:
    type: postgres
    dsn_env: PG_DSN
    table: public.shops
    key_column: shop_id
    fields: {orders_30m: INT32}
  drivers:
    type: http
    url: http://feast:6566
    feature_view: driver_hourly_stats
    token_env: FEAST_TOKEN
    timeout: 20ms
  local:
    type: static
    path: users.csv
    key_column: user_id
    cache: {ttl: 1m, backend: redis, redis_url: "redis://127.0.0.1:6379/1"}
"""
ENV = {"REDIS_PASSWORD": "s3cret", "PG_DSN": "postgresql://app@db/features", "FEAST_TOKEN": "tok"}


async def test_every_kind_is_built(tmp_path: Path) -> None:
    (tmp_path / "users.csv").write_text("user_id,age\n1,2\n")
    sources = sources_from_config(yaml.safe_load(CONFIG)["feature_sources"], base_dir=tmp_path, environ=ENV)
    try:
        users, shops, drivers, local = (
            sources["users"],
            sources["shops"],
            sources["drivers"],
            sources["local"],
        )
        assert isinstance(users, CachedSource) and users.ttl_s == 30 and users.backend == "memory"
        assert isinstance(users.source, RedisSource) and users.source.key_template == "user:{key}"
        assert users.source._pool.connection_kwargs["password"] == "s3cret"
        assert users.source._pool.connection_kwargs["socket_timeout"] == pytest.approx(0.05)
        assert (
            isinstance(shops, PostgresSource) and shops.dsn == ENV["PG_DSN"] and shops.table == "public.shops"
        )
        assert shops.schema() == {"orders_30m": DataType.INT32}
        assert isinstance(drivers, HttpSource) and drivers._client.headers["Authorization"] == "Bearer tok"
        assert isinstance(local, CachedSource) and isinstance(local.source, StaticSource)
        assert local.ttl_s == 60 and local.backend == "redis" and local.source.path == tmp_path / "users.csv"
    finally:
        for source in sources.values():
            await source.close()


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"type": "redis", "url": "redis://x", "key_templat": "u:{key}"}, "did you mean 'key_template'"),
        ({"type": "redis", "password": "hunter2"}, "credentials come from the environment; use password_env"),
        ({"type": "redis", "url": "redis://:hunter2@host:6379/0"}, "no password in the URL"),
        (
            {"type": "postgres", "dsn": "postgresql://u:pw@h/db", "table": "t", "key_column": "k"},
            "no password",
        ),
        ({"type": "postgres", "dsn_env": "NOPE", "table": "t", "key_column": "k"}, "NOPE is not set"),
        ({"type": "postgres", "dsn": "postgresql://h/db"}, "missing table, key_column"),
        ({"type": "redsi"}, "type must be one of"),
        ({"type": "redis", "cache": {"ttl": "30s", "backnd": "redis"}}, "did you mean 'backend'"),
        ({"type": "redis", "cache": {"ttl": "soon"}}, "not a duration"),
        ({"type": "http", "url": "http://x", "feature_view": "v", "token": "abc"}, "use token_env"),
    ],
)
def test_config_errors(entry: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_source("users", entry, environ={})


def test_durations() -> None:
    assert parse_duration("20ms", "x") == pytest.approx(0.02)
    assert parse_duration("30s", "x") == 30 and parse_duration("5m", "x") == 300
    assert parse_duration(1.5, "x") == 1.5 and parse_duration("250us", "x") == pytest.approx(0.00025)
