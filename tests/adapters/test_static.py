"""StaticSource: CSV, Parquet and JSON Lines files served from memory."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from adapters.static import StaticSource
from engine.interfaces import FeatureField, FeatureStatus
from engine.tensors import DataType

FIELDS = [
    FeatureField("age_days", DataType.FP32, default=0.0),
    FeatureField("txn_24h", DataType.INT64, default=-1),
    FeatureField("vip", DataType.BOOL, default=False),
]
ROWS = [
    {"user_id": "u1", "age_days": 10.5, "txn_24h": 3, "vip": True},
    {"user_id": "u2", "age_days": 2.0, "txn_24h": None, "vip": False},
]


def _write(tmp_path: Path, kind: str) -> Path:
    if kind == "csv":
        path = tmp_path / "users.csv"
        path.write_text("user_id,age_days,txn_24h,vip\nu1,10.5,3,true\nu2,2.0,,false\n")
    elif kind == "parquet":
        path = tmp_path / "users.parquet"
        pq.write_table(pa.Table.from_pylist(ROWS), path)
    else:
        path = tmp_path / "users.jsonl"
        path.write_text("\n".join(json.dumps(r) for r in ROWS) + "\n")
    return path


@pytest.mark.parametrize("kind", ["csv", "parquet", "jsonl"])
async def test_each_format_serves_the_same_features(tmp_path: Path, kind: str) -> None:
    source = StaticSource("users", _write(tmp_path, kind), key_column="user_id")
    batch = await source.fetch(["u2", "u1", "ghost", b"u1"], FIELDS)
    assert len(source) == 2 and source.columns == ["age_days", "txn_24h", "vip"]
    np.testing.assert_array_equal(batch.values["age_days"], np.array([2.0, 10.5, 0.0, 10.5], np.float32))
    assert batch.values["txn_24h"].tolist() == [-1, 3, -1, 3]
    assert batch.values["vip"].tolist() == [False, True, False, True]
    assert batch.status.tolist() == [
        [FeatureStatus.PRESENT, FeatureStatus.MISSING, FeatureStatus.PRESENT],
        [FeatureStatus.PRESENT] * 3,
        [FeatureStatus.MISSING] * 3,
        [FeatureStatus.PRESENT] * 3,
    ]


async def test_json_array_integer_keys_and_staleness(tmp_path: Path) -> None:
    path = tmp_path / "shops.json"
    now = time.time()
    path.write_text(json.dumps([{"id": 7, "orders": 4, "ts": now}, {"id": 8, "orders": 5, "ts": now - 999}]))
    source = StaticSource("shops", path, key_column="id", timestamp_column="ts")
    orders = FeatureField("orders", DataType.INT32, default=0)
    batch = await source.fetch(["7", "8"], [orders], max_age_s=60)
    assert batch.values["orders"].tolist() == [4, 0]
    assert batch.status[:, 0].tolist() == [FeatureStatus.PRESENT, FeatureStatus.STALE]


def test_bad_files_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown feature file type"):
        StaticSource("x", tmp_path / "x.txt", key_column="id")
    path = _write(tmp_path, "csv")
    with pytest.raises(ValueError, match="no key column 'id'"):
        StaticSource("x", path, key_column="id")
