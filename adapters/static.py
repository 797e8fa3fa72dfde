"""A file of features held in memory: the embedded default so the examples need no store.

The file is read once, when the source is built: CSV (header row), Parquet, JSON Lines
(one object per line) or a JSON array of objects, chosen by suffix. Rows become a dict
``key -> row``; a later row with the same key replaces an earlier one. A fetch is a
dict lookup per key; values are converted to each field's datatype as for any store.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from adapters.base import STALE, BatchBuilder, check_fields, is_stale, key_text
from engine.interfaces import FeatureBatch, FeatureField
from engine.tensors import DataType

FORMATS = {
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
}


def read_records(path: Path) -> list[dict[str, object]]:
    """The rows of a CSV, Parquet, JSON Lines or JSON-array file as dicts."""
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise ValueError(f"{path}: unknown feature file type (expected one of {', '.join(sorted(FORMATS))})")
    if kind == "csv":
        with path.open(newline="", encoding="utf-8") as f:
            return [{k: (None if v == "" else v) for k, v in row.items()} for row in csv.DictReader(f)]
    if kind == "parquet":
        import pyarrow.parquet as pq

        rows: list[dict[str, object]] = pq.read_table(path).to_pylist()
        return rows
    text = path.read_text(encoding="utf-8")
    records: list[object]
    if kind == "json" and text.lstrip().startswith("["):
        records = json.loads(text)
    else:
        records = [json.loads(line) for line in text.splitlines() if line.strip()]
    objects = [r for r in records if isinstance(r, dict)]
    if len(objects) != len(records):
        raise ValueError(f"{path}: every JSON record must be an object")
    return objects


class StaticSource:
    """A ``FeatureSource`` over a file loaded into memory at construction."""

    def __init__(
        self,
        name: str,
        path: str | Path,
        *,
        key_column: str,
        timestamp_column: str | None = None,
        schema: Mapping[str, DataType] | None = None,
    ) -> None:
        self.name = name
        self.path = Path(path)
        self.key_column = key_column
        self.timestamp_column = timestamp_column
        records = read_records(self.path)
        if records and key_column not in records[0]:
            raise ValueError(f"{self.path}: no key column '{key_column}' (columns: {', '.join(records[0])})")
        self._rows: dict[str, dict[str, object]] = {
            key_text(r[key_column]): r for r in records if r.get(key_column) is not None
        }
        self._columns = [c for c in (records[0] if records else {}) if c != key_column]
        self._schema = dict(schema) if schema is not None else None

    def __repr__(self) -> str:
        return f"StaticSource({self.name!r}, {str(self.path)!r}, rows={len(self._rows)})"

    def __len__(self) -> int:
        return len(self._rows)

    def schema(self) -> Mapping[str, DataType] | None:
        return self._schema

    @property
    def columns(self) -> list[str]:
        """The file's columns other than the key (what graphs may ask for)."""
        return list(self._columns)

    async def fetch(
        self, keys: Sequence[str], fields: Sequence[FeatureField], *, max_age_s: float | None = None
    ) -> FeatureBatch:
        check_fields(fields)
        builder = BatchBuilder(len(keys), fields)
        ts_column = self.timestamp_column if max_age_s is not None else None
        for row, key in enumerate(keys):
            record = self._rows.get(key_text(key))
            if record is None:
                continue
            if ts_column is not None and is_stale(record.get(ts_column), max_age_s):
                builder.mark_row(row, STALE)
                continue
            builder.put_mapping(row, record)
        return builder.build()

    async def close(self) -> None:
        return None
