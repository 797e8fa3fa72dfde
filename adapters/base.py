"""What every feature source shares: value conversion, staleness and building a ``FeatureBatch``.

A source reads raw values (``bytes`` from Redis, Python objects from asyncpg or JSON,
strings from CSV) and hands them, cell by cell, to a ``BatchBuilder``. The builder
starts every cell at its field's default with status MISSING and never raises for
data: a value that cannot be converted to the field's datatype leaves the default in
place and marks the cell FAILED. Only a bad *default* (a configuration mistake) raises
``ValueError``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import SupportsFloat, SupportsIndex

import numpy as np

from engine.errors import DependencyUnavailable, new_error_id
from engine.interfaces import FeatureBatch, FeatureField, FeatureStatus
from engine.tensors import DataType

PRESENT = np.uint8(FeatureStatus.PRESENT)
CACHED = np.uint8(FeatureStatus.CACHED)
MISSING = np.uint8(FeatureStatus.MISSING)
STALE = np.uint8(FeatureStatus.STALE)
TIMED_OUT = np.uint8(FeatureStatus.TIMED_OUT)
FAILED = np.uint8(FeatureStatus.FAILED)

_FLOAT_MAX = {d: float(np.finfo(d.numpy_dtype).max) for d in (DataType.FP16, DataType.FP32, DataType.FP64)}
_TRUE = {"1", "true", "t", "yes", "y"}
_FALSE = {"0", "false", "f", "no", "n", ""}


class Unconvertible(ValueError):
    """A raw value that does not fit a field's datatype (caught by the builder)."""


def key_text(key: object) -> str:
    """An entity key as text: graphs hand BYTES keys as ``bytes``, configs and files as anything."""
    if isinstance(key, bytes | bytearray | memoryview):
        return bytes(key).decode("utf-8", "replace")
    if isinstance(key, np.generic):
        key = key.item()
    return str(key)


def convert(raw: object, datatype: DataType) -> object:
    """``raw`` as a Python value of ``datatype`` (bytes for BYTES); ``Unconvertible`` when it is not one."""
    if isinstance(raw, np.generic):
        raw = raw.item()
    if isinstance(raw, bytes | bytearray | memoryview):
        raw = bytes(raw)
        if datatype is DataType.BYTES:
            return raw
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise Unconvertible(f"{raw[:20]!r} is not text") from exc
    if datatype is DataType.BYTES:
        return raw.encode("utf-8") if isinstance(raw, str) else str(raw).encode("utf-8")
    if datatype is DataType.BOOL:
        return _to_bool(raw)
    dtype = datatype.numpy_dtype
    try:
        if datatype.is_float:
            number: float | int = _to_float(raw)
        else:
            number = _to_int(raw)
        if datatype.is_float and math.isfinite(number) and abs(number) > _FLOAT_MAX[datatype]:
            raise OverflowError(f"{number} overflows {datatype.value}")
        return dtype.type(number)
    except (TypeError, ValueError, OverflowError, ArithmeticError) as exc:
        raise Unconvertible(f"{raw!r} is not {datatype.value}") from exc


def _to_float(raw: object) -> float:
    """What ``float()`` accepts (text with surrounding blanks too); ``TypeError`` for anything else."""
    if isinstance(raw, float | int):  # the common case, before the slower protocol checks
        return float(raw)
    if isinstance(raw, str):
        return float(raw.strip())
    if isinstance(raw, SupportsFloat | SupportsIndex):
        return float(raw)
    raise TypeError(f"{raw!r} is not a number")


def _to_int(raw: object) -> int:
    if isinstance(raw, bool):
        return int(raw)
    if isinstance(raw, int):
        return raw
    if isinstance(raw, str):
        text = raw.strip()
        try:
            return int(text)
        except ValueError:
            raw = float(text)
    if isinstance(raw, float | Decimal) and float(raw).is_integer():
        return int(raw)
    raise ValueError(f"{raw!r} is not an integer")


def _to_bool(raw: object) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, int | float) and raw in (0, 1):
        return bool(raw)
    if isinstance(raw, str) and raw.strip().lower() in _TRUE | _FALSE:
        return raw.strip().lower() in _TRUE
    raise Unconvertible(f"{raw!r} is not BOOL")


def timestamp_seconds(raw: object) -> float | None:
    """A per-entity timestamp as Unix seconds: a number, numeric text, ISO 8601 text or a datetime.

    Numbers above 1e11 are taken as milliseconds. Anything else is ``None`` (unknown age).
    """
    if raw is None:
        return None
    if isinstance(raw, bytes | bytearray):
        raw = bytes(raw).decode("utf-8", "replace")
    if isinstance(raw, datetime):
        moment = raw if raw.tzinfo else raw.replace(tzinfo=UTC)
        return moment.timestamp()
    if isinstance(raw, str):
        text = raw.strip()
        try:
            raw = float(text)
        except ValueError:
            try:
                return timestamp_seconds(datetime.fromisoformat(text.replace("Z", "+00:00")))
            except ValueError:
                return None
    if isinstance(raw, int | float | Decimal | np.number) and not isinstance(raw, bool):
        seconds = float(raw)
        if not math.isfinite(seconds):
            return None
        return seconds / 1000.0 if seconds > 1e11 else seconds
    return None


def is_stale(raw_timestamp: object, max_age_s: float | None, now_s: float | None = None) -> bool:
    """True when a row's timestamp is older than ``max_age_s`` (or unknown while a max age is asked)."""
    if max_age_s is None:
        return False
    seconds = timestamp_seconds(raw_timestamp)
    if seconds is None:
        return True
    return (time.time() if now_s is None else now_s) - seconds > max_age_s


class BatchBuilder:
    """Fills a ``FeatureBatch`` cell by cell: every cell starts as default + MISSING."""

    __slots__ = ("_fields", "_values", "n", "status")

    def __init__(self, n: int, fields: Sequence[FeatureField]) -> None:
        self.n = n
        self._fields = tuple(fields)
        self._values = [default_array(f, n) for f in self._fields]
        self.status = np.full((n, len(self._fields)), MISSING, dtype=np.uint8)

    def put(self, row: int, col: int, raw: object, status: np.uint8 = PRESENT) -> None:
        """Store ``raw`` converted to the column's datatype; ``None`` stays MISSING, garbage is FAILED."""
        if raw is None:
            return
        try:
            self._values[col][row] = convert(raw, self._fields[col].datatype)
        except Unconvertible:
            self.status[row, col] = FAILED
            return
        self.status[row, col] = status

    def put_column(self, col: int, raws: Sequence[object], status: np.uint8 = PRESENT) -> None:
        """Store one raw value per row in column ``col``; whole-column numpy parsing when every
        value is present and parses, else cell by cell (same results, just slower)."""
        if len(raws) != self.n:
            raise ValueError(f"{len(raws)} values for {self.n} rows")
        parsed = _parse_column(raws, self._fields[col].datatype)
        if parsed is not None:
            self._values[col][:] = parsed
            self.status[:, col] = status
            return
        for row, raw in enumerate(raws):
            self.put(row, col, raw, status)

    def put_row(self, row: int, raws: Sequence[object], status: np.uint8 = PRESENT) -> None:
        for col, raw in enumerate(raws):
            self.put(row, col, raw, status)

    def put_mapping(self, row: int, record: Mapping[str, object], status: np.uint8 = PRESENT) -> None:
        for col, f in enumerate(self._fields):
            self.put(row, col, record.get(f.name), status)

    def take(self, rows: Sequence[int], batch: FeatureBatch, source: Sequence[int] | None = None) -> None:
        """Copy ``batch`` (same fields) into ``rows``: its rows ``source`` (default: all, in order)."""
        index = np.asarray(rows, dtype=np.intp)
        if source is None:
            for col, f in enumerate(self._fields):
                self._values[col][index] = batch.values[f.name]
            self.status[index, :] = batch.status
            return
        picked = np.asarray(source, dtype=np.intp)
        for col, f in enumerate(self._fields):
            self._values[col][index] = batch.values[f.name][picked]
        self.status[index, :] = batch.status[picked]

    def mark_row(self, row: int, status: np.uint8) -> None:
        """Give a whole row ``status`` with defaults (stale, failed, timed out)."""
        for col, f in enumerate(self._fields):
            self._values[col][row] = _default_value(f)
        self.status[row, :] = status

    def build(self) -> FeatureBatch:
        return FeatureBatch(
            values={f.name: v for f, v in zip(self._fields, self._values, strict=True)},
            status=self.status,
        )


_INT_RANGE = {
    d: np.iinfo(d.numpy_dtype) for d in (DataType.INT8, DataType.INT16, DataType.INT32, DataType.INT64)
}


def _parse_column(raws: Sequence[object], datatype: DataType) -> np.ndarray | None:
    """The fast path of ``put_column``: ``None`` whenever any value needs the cell-by-cell rules."""
    if len(raws) < 4 or not (datatype.is_float or datatype in _INT_RANGE) or any(r is None for r in raws):
        return None
    try:
        arr = np.asarray(raws)
        if datatype.is_float:
            if arr.dtype.kind not in "SUiuf":
                return None
            wide = arr.astype(np.float64)
            finite = wide[np.isfinite(wide)]
            if finite.size and np.abs(finite).max() > _FLOAT_MAX[datatype]:
                return None
            return wide.astype(datatype.numpy_dtype)
        if arr.dtype.kind not in "SUiub":
            return None
        wide = arr.astype(np.int64)
        bounds = _INT_RANGE[datatype]
        if wide.size and (wide.min() < bounds.min or wide.max() > bounds.max):
            return None
        return wide.astype(datatype.numpy_dtype)
    except (ValueError, TypeError, OverflowError):
        return None


def default_array(field: FeatureField, n: int) -> np.ndarray:
    """``n`` copies of the field's default, in its datatype."""
    value = _default_value(field)
    if field.datatype is DataType.BYTES:
        out = np.empty(n, dtype=object)
        out[:] = [value] * n
        return out
    return np.full(n, value, dtype=field.datatype.numpy_dtype)


_DEFAULTS: dict[FeatureField, object] = {}


def _default_value(field: FeatureField) -> object:
    try:
        return _DEFAULTS[field]
    except (KeyError, TypeError):  # not seen yet, or an unhashable default
        pass
    value = _convert_default(field)
    if len(_DEFAULTS) < 4096:
        with contextlib.suppress(TypeError):
            _DEFAULTS[field] = value
    return value


def _convert_default(field: FeatureField) -> object:
    try:
        return convert(field.default, field.datatype)
    except Unconvertible as exc:
        raise ValueError(
            f"field '{field.name}': default {field.default!r} is not {field.datatype.value}"
        ) from exc


def all_default(keys: Sequence[object], fields: Sequence[FeatureField], status: np.uint8) -> FeatureBatch:
    """Every cell the default, every status ``status`` (for a node that chose defaults on failure)."""
    builder = BatchBuilder(len(keys), fields)
    builder.status[:] = status
    return builder.build()


def check_fields(fields: Sequence[FeatureField]) -> None:
    """Field names must be unique within one fetch."""
    names = [f.name for f in fields]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate field names in {names}")


store_log = logging.getLogger("engine.features")
STORE_LOG_EVERY_S = 10.0
"""A failing store is logged at most once per source and kind of failure in this many seconds."""
_last_logged: dict[tuple[str, str], tuple[float, int]] = {}


def unavailable(
    source: str, kind: str, exc: BaseException | None = None, detail: str = ""
) -> DependencyUnavailable:
    """A store failure as callers see it: the source and the kind of failure, nothing else.

    The driver's text (host:port, DSN, server messages) goes to the ``engine.features`` log
    with the error id the caller's message carries, at most once per source and kind every
    ``STORE_LOG_EVERY_S`` (a store that is down fails every request; the log says how many)."""
    error_id = new_error_id()
    now = time.monotonic()
    last, suppressed = _last_logged.get((source, kind), (-math.inf, 0))
    if now - last >= STORE_LOG_EVERY_S:
        _last_logged[(source, kind)] = (now, 0)
        more = f" ({suppressed} more like it since the last report)" if suppressed else ""
        store_log.warning(
            "feature source %s: %s (error id %s)%s: %s",
            source,
            kind,
            error_id,
            more,
            f"{type(exc).__name__}: {exc}" if exc is not None else detail,
        )
    else:
        _last_logged[(source, kind)] = (last, suppressed + 1)
    return DependencyUnavailable(f"feature source '{source}': {kind} (error id {error_id})")
