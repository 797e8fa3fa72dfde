"""The loader: a CSV/Parquet file written into Redis or Postgres reads back equal to the file."""

from __future__ import annotations

import asyncio
import csv
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from adapters.loader import load_file, main
from adapters.postgres import PostgresSource
from adapters.redis import RedisSource
from engine.interfaces import FeatureField, FeatureStatus
from engine.tensors import DataType

FIELDS = [
    FeatureField("orders_30m", DataType.INT64, default=-1),
    FeatureField("rating", DataType.FP64, default=0.0),
    FeatureField("city", DataType.BYTES, default=b""),
]


def _csv(tmp_path: Path, n: int = 40) -> tuple[Path, list[dict[str, str]]]:
    path = tmp_path / "shops.csv"
    rows = [
        {"shop_id": f"s{i}", "orders_30m": str(i * 3), "rating": str(i / 8), "city": f"city {i}"}
        for i in range(n)
    ]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path, rows


def _expect(batch, rows) -> None:
    assert (batch.status == FeatureStatus.PRESENT).all()
    assert batch.values["orders_30m"].tolist() == [int(r["orders_30m"]) for r in rows]
    assert batch.values["rating"].tolist() == [float(r["rating"]) for r in rows]
    assert batch.values["city"].tolist() == [r["city"].encode() for r in rows]


async def test_csv_into_redis_round_trip(tmp_path: Path, redis_url: str, prefix: str) -> None:
    path, rows = _csv(tmp_path)
    config = {"type": "redis", "url": redis_url, "key_template": prefix + "shop:{key}"}
    assert await load_file(config, path, chunk=16, key_column="shop_id") == len(rows)
    source = RedisSource("shops", redis_url, key_template=prefix + "shop:{key}")
    try:
        _expect(await source.fetch([r["shop_id"] for r in rows], FIELDS), rows)
    finally:
        await source.close()


async def test_parquet_into_postgres_round_trip_and_upsert(
    tmp_path: Path, pg_dsn: str, pg_table: str
) -> None:
    _, rows = _csv(tmp_path)
    table = pa.Table.from_pylist(
        [
            {
                "shop_id": r["shop_id"],
                "orders_30m": int(r["orders_30m"]),
                "rating": float(r["rating"]),
                "city": r["city"],
            }
            for r in rows
        ]
    )
    path = tmp_path / "shops.parquet"
    pq.write_table(table, path)
    config = {"type": "postgres", "dsn": pg_dsn, "table": pg_table, "key_column": "shop_id"}
    assert await load_file(config, path) == len(rows)
    rows[0]["orders_30m"] = "999"
    pq.write_table(table.slice(0, 1).set_column(1, "orders_30m", pa.array([999])), path)
    assert await load_file(config, path) == 1  # upsert: the row is replaced, not duplicated
    source = PostgresSource("shops", pg_dsn, table=pg_table, key_column="shop_id")
    try:
        _expect(await source.fetch([r["shop_id"] for r in rows], FIELDS), rows)
    finally:
        await source.close()


async def test_command_line_csv_into_postgres(tmp_path: Path, pg_dsn: str, pg_table: str, capsys) -> None:
    path, rows = _csv(tmp_path, n=5)
    engine_yaml = tmp_path / "engine.yaml"
    engine_yaml.write_text(
        yaml.safe_dump(
            {
                "feature_sources": {
                    "shops": {"type": "postgres", "dsn": pg_dsn, "table": pg_table, "key_column": "shop_id"}
                }
            }
        )
    )
    code = await asyncio.to_thread(main, ["shops", str(path), "--config", str(engine_yaml)])
    assert code == 0 and "loaded 5 rows" in capsys.readouterr().out
    source = PostgresSource("shops", pg_dsn, table=pg_table, key_column="shop_id")
    try:
        _expect(await source.fetch([r["shop_id"] for r in rows], FIELDS), rows)
    finally:
        await source.close()
