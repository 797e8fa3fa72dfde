"""Write a CSV, Parquet or JSON Lines file into a Redis or Postgres feature source.

Redis: one ``HSET`` per row at the source's ``key_template``, sent in pipelines of
``chunk`` rows (no transaction). Postgres: ``CREATE TABLE IF NOT EXISTS`` with column
types taken from the file (the key column is the primary key), then an upsert of every
row (``INSERT … ON CONFLICT (key) DO UPDATE``) through ``executemany``.

    python -m adapters.loader SOURCE FILE --config engine.yaml
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import pyarrow as pa
import redis.asyncio as aioredis
import yaml

from adapters.postgres import quote_identifier
from adapters.registry import SourceConfig, parse_source
from adapters.static import FORMATS
from engine.errors import DependencyUnavailable


def read_table(path: Path) -> pa.Table:
    """The file as an Arrow table (types inferred for CSV and JSON Lines)."""
    kind = FORMATS.get(path.suffix.lower())
    if kind == "csv":
        from pyarrow import csv

        return csv.read_csv(path)
    if kind == "parquet":
        from pyarrow import parquet

        return parquet.read_table(path)
    if kind == "jsonl":
        from pyarrow import json

        return json.read_json(path)
    raise ValueError(f"{path}: the loader reads .csv, .parquet and .jsonl files")


async def load_file(
    source_config: SourceConfig | Mapping[str, Any],
    file_path: str | Path,
    *,
    chunk: int = 1000,
    key_column: str | None = None,
) -> int:
    """Write every row of ``file_path`` into the source; returns the number of rows written.

    The entity key is ``key_column``, else the source's own ``key_column`` (Postgres),
    else the file's first column.
    """
    config = (
        source_config if isinstance(source_config, SourceConfig) else parse_source("source", source_config)
    )
    table = read_table(Path(file_path))
    key = key_column or config.options.get("key_column") or table.column_names[0]
    if key not in table.column_names:
        raise ValueError(f"the file has no key column '{key}' (columns: {', '.join(table.column_names)})")
    if config.type == "redis":
        return await _load_redis(config, table, key, chunk)
    if config.type == "postgres":
        return await _load_postgres(config, table, key)
    raise ValueError(f"feature source '{config.name}' is {config.type}; the loader writes redis and postgres")


def _redis_text(value: object) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, float):
        return repr(value)
    return str(value)


async def _load_redis(config: SourceConfig, table: pa.Table, key_column: str, chunk: int) -> int:
    opts = config.options
    template = str(opts.get("key_template", "user:{key}"))
    client = aioredis.Redis.from_url(
        opts.get("url", "redis://127.0.0.1:6379/0"),
        password=opts.get("password"),
        socket_timeout=10,
        socket_connect_timeout=float(opts.get("connect_timeout_s", 2.0)),
    )
    rows = table.to_pylist()
    try:
        for start in range(0, len(rows), chunk):
            async with client.pipeline(transaction=False) as pipe:
                for row in rows[start : start + chunk]:
                    key = template.replace("{key}", _redis_text(row[key_column]))
                    mapping = {k: _redis_text(v) for k, v in row.items() if k != key_column and v is not None}
                    if mapping:
                        pipe.hset(key, mapping=mapping)
                await pipe.execute()
    except (aioredis.RedisError, OSError) as exc:
        raise DependencyUnavailable(f"feature source '{config.name}': redis: {exc}") from exc
    finally:
        await client.aclose()
    return len(rows)


def _pg_type(arrow_type: pa.DataType) -> str:
    if pa.types.is_boolean(arrow_type):
        return "boolean"
    if pa.types.is_integer(arrow_type):
        return "bigint"
    if pa.types.is_floating(arrow_type) or pa.types.is_decimal(arrow_type):
        return "double precision"
    if pa.types.is_timestamp(arrow_type):
        return "timestamptz"
    if pa.types.is_date(arrow_type):
        return "date"
    return "text"


async def _load_postgres(config: SourceConfig, table: pa.Table, key_column: str) -> int:
    opts = config.options
    names = [key_column, *(c for c in table.column_names if c != key_column)]
    quoted = [quote_identifier(n) for n in names]
    target, key = quote_identifier(opts["table"]), quoted[0]
    columns = ", ".join(
        f"{q} {_pg_type(table.schema.field(n).type)}" for n, q in zip(names, quoted, strict=True)
    )
    create = f"CREATE TABLE IF NOT EXISTS {target} ({columns}, PRIMARY KEY ({key}))"
    updates = ", ".join(f"{q} = EXCLUDED.{q}" for q in quoted[1:]) or f"{key} = EXCLUDED.{key}"
    placeholders = ", ".join(f"${i}" for i in range(1, len(names) + 1))
    upsert = (
        f"INSERT INTO {target} ({', '.join(quoted)}) VALUES ({placeholders}) "
        f"ON CONFLICT ({key}) DO UPDATE SET {updates}"
    )
    records = [tuple(row[n] for n in names) for row in table.select(names).to_pylist()]
    try:
        conn = await asyncpg.connect(
            opts["dsn"], password=opts.get("password"), timeout=float(opts.get("connect_timeout_s", 5.0))
        )
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        raise DependencyUnavailable(f"feature source '{config.name}': postgres: {exc}") from exc
    try:
        async with conn.transaction():
            await conn.execute(create)
            await conn.executemany(upsert, records)
    finally:
        await conn.close()
    return len(records)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="engine features load", description=__doc__.splitlines()[0])
    parser.add_argument("source", help="a name under feature_sources in the config")
    parser.add_argument("file", type=Path, help=".csv, .parquet or .jsonl; one row per entity")
    parser.add_argument(
        "--config", type=Path, required=True, help="engine.yaml with a feature_sources section"
    )
    parser.add_argument(
        "--key-column", help="the file's entity-key column (default: the source's, else the first)"
    )
    args = parser.parse_args(argv)
    for what, path in (("config", args.config), ("file", args.file)):
        if not path.is_file():
            print(f"error: no such {what}: {path}", file=sys.stderr)
            return 2
    document = yaml.safe_load(args.config.read_text()) or {}
    sources = document.get("feature_sources") or {}
    if args.source not in sources:
        parser.error(
            f"no feature source '{args.source}' in {args.config} (have: {', '.join(sources) or 'none'})"
        )
    try:
        config = parse_source(args.source, sources[args.source], base_dir=args.config.parent)
        count = asyncio.run(load_file(config, args.file, key_column=args.key_column))
    except (ValueError, DependencyUnavailable, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"loaded {count} rows from {args.file} into feature source '{args.source}' ({config.type})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
