"""The Parquet request-log sink and the record -> Arrow table conversion (pyarrow is optional).

One file per batch, written to ``NAME.parquet.tmp`` and renamed, so a reader
never sees a partial file. Scalar fields are columns of their own (``time`` a
UTC timestamp in microseconds, ``latency_us`` an int64); ``models``,
``inputs``, ``nodes``, ``branches``, ``outputs``, ``features`` and ``shadow``
are JSON text columns holding exactly what the JSON Lines record holds; so is ``truncated``
(the tensors summarised to fit ``max_record_bytes``), null and left out when read back for a
record that has none.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from engine.observability.log_sinks import check_writable, file_time

TEXT_COLUMNS = (
    "schema",
    "id",
    "trace_id",
    "graph",
    "version",
    "status",
    "error",
    "sampled_because",
    "protocol",
)
JSON_COLUMNS = ("models", "inputs", "nodes", "branches", "outputs", "features", "shadow", "truncated")
OPTIONAL_COLUMNS = frozenset({"truncated"})
"""Columns a JSON Lines record has only sometimes: left out of a record read back when null."""


def require_pyarrow() -> Any:
    """The ``pyarrow`` module; ValueError with what to install when it is missing."""
    try:
        import pyarrow
        import pyarrow.parquet  # loads the submodule
    except ImportError as exc:
        raise ValueError(
            "the parquet request-log sink and 'engine logs to-parquet' need pyarrow: pip install pyarrow"
        ) from exc
    return pyarrow


def records_to_table(records: Iterable[Mapping[str, Any]]) -> Any:
    """A ``pyarrow.Table`` with one row per record (see the module docstring for the columns)."""
    pa = require_pyarrow()
    rows = list(records)
    columns: dict[str, Any] = {
        k: pa.array([_text(r.get(k)) for r in rows], pa.string()) for k in TEXT_COLUMNS
    }
    columns["time"] = pa.array([_time(r.get("time")) for r in rows], pa.timestamp("us", tz="UTC"))
    columns["latency_us"] = pa.array([r.get("latency_us") for r in rows], pa.int64())
    for key in JSON_COLUMNS:
        columns[key] = pa.array(
            [None if r.get(key) is None else json.dumps(r[key], separators=(",", ":")) for r in rows],
            pa.string(),
        )
    return pa.table(columns)


def write_parquet(records: Iterable[Mapping[str, Any]], path: str | Path, compression: str = "zstd") -> int:
    """Write ``records`` to one Parquet file atomically; the number of rows."""
    pa = require_pyarrow()
    table = records_to_table(records)
    target = Path(path)
    partial = target.with_name(target.name + ".tmp")
    pa.parquet.write_table(table, partial, compression=compression)
    os.replace(partial, target)
    return int(table.num_rows)


def read_parquet(path: str | Path) -> list[dict[str, Any]]:
    """The records of one Parquet file the sink (or ``engine logs to-parquet``) wrote, in the shape
    a JSON Lines reader gets them: JSON columns parsed, ``time`` as RFC 3339 text."""
    pa = require_pyarrow()
    table = pa.parquet.read_table(path)
    records = []
    for row in table.to_pylist():
        record: dict[str, Any] = {}
        for key, value in row.items():
            if value is None and key in OPTIONAL_COLUMNS:
                continue
            if key in JSON_COLUMNS:
                record[key] = None if value is None else json.loads(value)
            elif key == "time" and isinstance(value, datetime):
                record[key] = value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            else:
                record[key] = value
        records.append(record)
    return records


class ParquetSink:
    """One Parquet file per batch in ``directory``."""

    def __init__(
        self,
        directory: str | Path,
        *,
        file_pattern: str = "requests-{time}-{pid}.parquet",
        compression: str = "zstd",
    ) -> None:
        require_pyarrow()
        if "{time}" not in file_pattern or not file_pattern.endswith(".parquet") or "/" in file_pattern:
            raise ValueError(
                f"request log: file_pattern {file_pattern!r} must contain {{time}} and end in .parquet"
            )
        self.directory = Path(directory)
        check_writable(self.directory)
        self.file_pattern = file_pattern
        self.compression = compression
        self._last = ""

    def write(self, records: Sequence[Mapping[str, Any]]) -> None:
        stamp = time.time_ns()
        name = self.file_pattern.format(time=file_time(stamp), pid=os.getpid())
        while name == self._last:
            stamp += 1000
            name = self.file_pattern.format(time=file_time(stamp), pid=os.getpid())
        self._last = name
        self.directory.mkdir(parents=True, exist_ok=True)  # deleted under us: made again
        write_parquet(records, self.directory / name, self.compression)

    def close(self) -> None:
        pass


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
