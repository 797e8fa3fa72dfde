"""Value conversion, staleness and batch building shared by every source."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import numpy as np
import pytest

from adapters.base import BatchBuilder, Unconvertible, convert, is_stale, timestamp_seconds
from engine.interfaces import FeatureField, FeatureStatus
from engine.tensors import DataType


@pytest.mark.parametrize(
    ("raw", "datatype", "expected"),
    [
        (b"1.5", DataType.FP32, 1.5),
        ("  7 ", DataType.INT64, 7),
        (b"3.0", DataType.INT32, 3),
        (Decimal("2.5"), DataType.FP64, 2.5),
        (b"true", DataType.BOOL, True),
        ("0", DataType.BOOL, False),
        (1, DataType.BOOL, True),
        (42, DataType.BYTES, b"42"),
        ("héllo", DataType.BYTES, "héllo".encode()),
        (np.int64(5), DataType.UINT8, 5),
    ],
)
def test_convert(raw: object, datatype: DataType, expected: object) -> None:
    assert convert(raw, datatype) == expected


@pytest.mark.parametrize(
    ("raw", "datatype"),
    [
        (b"abc", DataType.FP32),
        (b"3.5", DataType.INT64),
        (300, DataType.INT8),
        (-1, DataType.UINT32),
        ("maybe", DataType.BOOL),
        (b"\xff\xfe", DataType.INT32),
        ("1e100", DataType.FP16),
        ([1, 2], DataType.FP32),
    ],
)
def test_unconvertible(raw: object, datatype: DataType) -> None:
    with pytest.raises(Unconvertible):
        convert(raw, datatype)


def test_builder_defaults_failures_and_rows() -> None:
    fields = [FeatureField("a", DataType.FP32, default=-1), FeatureField("b", DataType.BYTES, default="none")]
    builder = BatchBuilder(3, fields)
    builder.put_row(0, [b"2.5", b"x"])
    builder.put_row(1, [b"oops", None])
    builder.put_row(2, [b"1", b"y"])
    builder.mark_row(2, np.uint8(FeatureStatus.STALE))
    batch = builder.build()
    assert batch.values["a"].dtype == np.float32 and batch.values["b"].dtype == object
    assert batch.values["a"].tolist() == [2.5, -1.0, -1.0]
    assert batch.values["b"].tolist() == [b"x", b"none", b"none"]
    assert batch.status.tolist() == [[0, 0], [FeatureStatus.FAILED, FeatureStatus.MISSING], [3, 3]]


def test_bad_default_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="default"):
        BatchBuilder(1, [FeatureField("a", DataType.INT32, default="zero")])


def test_timestamps_and_staleness() -> None:
    assert timestamp_seconds(b"1700000000") == 1700000000.0
    assert timestamp_seconds(1700000000123) == pytest.approx(1700000000.123)
    assert timestamp_seconds("2023-11-14T22:13:20Z") == 1700000000.0
    assert timestamp_seconds(datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)) == 1700000000.0
    assert timestamp_seconds("yesterday") is None
    assert not is_stale(None, None)
    assert is_stale(None, 60)  # unknown age under a max age: not trusted
    assert is_stale(1000.0, 60, now_s=1061.0) and not is_stale(1000.0, 60, now_s=1059.0)
