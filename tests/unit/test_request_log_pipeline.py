"""``RequestLog``: submit never blocks or raises; every record is written, dropped or failed, exactly once."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from engine.observability.log_config import request_log_from_config
from engine.observability.log_sinks import JsonlSink, file_time
from engine.observability.record_cap import encode_line
from engine.observability.request_log import MemorySink, RequestLog, SinkWriteError

N = 10_000


def _records(n: int) -> list[dict[str, Any]]:
    return [{"schema": "engine.request/1", "id": f"r{i}", "status": "OK"} for i in range(n)]


class StallingSink:
    """Blocks in ``write`` until released (a hung disk or network)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()

    def write(self, records: Sequence[dict[str, Any]]) -> None:
        self.entered.set()
        self.release.wait(30)

    def close(self) -> None:
        self.release.wait(30)


class RaisingSink:
    def __init__(self) -> None:
        self.calls = 0

    def write(self, records: Sequence[dict[str, Any]]) -> None:
        self.calls += 1
        raise OSError("disk on fire")

    def close(self) -> None:
        raise OSError("still on fire")


class HalfSink(MemorySink):
    def write(self, records: Sequence[dict[str, Any]]) -> None:
        self.records.extend(records[::2])
        raise SinkWriteError("odd ones lost", len(records) // 2)


def _accounted(log: RequestLog, submitted: int) -> None:
    assert log.pending == 0
    assert log.written + log.dropped + log.failed == submitted, log.counters()


def _submit_all(log: RequestLog, records: list[dict[str, Any]]) -> tuple[int, float]:
    t0 = time.perf_counter()
    accepted = sum(log.submit(r) for r in records)
    return accepted, time.perf_counter() - t0


async def test_close_flushes_everything_in_order() -> None:
    sink = MemorySink()
    log = RequestLog(sink, batch_size=64, flush_interval_s=10)  # only close() makes partial batches go
    await log.start()
    accepted, _ = _submit_all(log, _records(1000))
    await log.close(timeout=5)
    assert accepted == 1000
    assert [r["id"] for r in sink.records] == [f"r{i}" for i in range(1000)]
    assert (log.written, log.dropped, log.failed) == (1000, 0, 0)
    assert sink.closed


async def test_records_are_written_without_close_after_the_flush_interval() -> None:
    sink = MemorySink()
    log = RequestLog(sink, batch_size=256, flush_interval_s=0.01)
    await log.start()
    log.submit({"id": "one"})
    for _ in range(200):
        await asyncio.sleep(0.01)
        if sink.records:
            break
    assert sink.records == [{"id": "one"}] and log.written == 1
    await log.close()


async def test_a_stalled_sink_never_blocks_submit_or_the_loop() -> None:
    sink = StallingSink()
    log = RequestLog(sink, queue_size=1000, batch_size=100, flush_interval_s=0)
    await log.start()
    log.submit({"id": "first"})
    await asyncio.to_thread(sink.entered.wait, 5)  # the writer is now stuck in the sink
    accepted, elapsed = _submit_all(log, _records(N))
    assert accepted == 1000  # the queue filled; the rest were dropped, not waited for
    assert log.dropped == N - 1000
    assert elapsed < 1.0, f"10,000 submits took {elapsed:.3f}s"
    t0 = time.perf_counter()
    await asyncio.sleep(0.01)  # the loop is free while the sink hangs
    assert time.perf_counter() - t0 < 0.5
    await log.close(timeout=0.2)  # cannot flush: what is left is dropped
    _accounted(log, N + 1)
    assert log.written == 0 and log.failed == 0
    sink.release.set()


async def test_a_raising_sink_counts_failures_and_never_raises_into_submit() -> None:
    sink = RaisingSink()
    log = RequestLog(sink, queue_size=N, batch_size=256, flush_interval_s=0)
    await log.start()
    accepted, _ = _submit_all(log, _records(N))
    await log.close(timeout=5)  # the sink's close raising is logged, not raised
    assert accepted == N
    assert log.failed == N and log.written == 0 and log.dropped == 0
    assert "disk on fire" in log.last_error
    assert sink.calls >= N // 256
    _accounted(log, N)


async def test_a_partly_failing_batch_splits_its_count() -> None:
    log = RequestLog(HalfSink(), batch_size=10, flush_interval_s=10)
    await log.start()
    _submit_all(log, _records(100))
    await log.close()
    assert (log.written, log.failed, log.dropped) == (50, 50, 0)


async def test_submit_outside_start_and_close_is_dropped() -> None:
    log = RequestLog(MemorySink())
    assert log.submit({"id": "early"}) is False
    await log.start()
    assert log.submit({"id": "ok"}) is True
    await log.close()
    assert log.submit({"id": "late"}) is False
    assert (log.written, log.dropped) == (1, 2)


async def test_jsonl_on_a_full_disk_fails_records_but_not_submit(tmp_path: Path) -> None:
    stamp = 1_767_225_600_000_000_000
    (tmp_path / f"requests-{file_time(stamp)}-{os.getpid()}.jsonl").symlink_to("/dev/full")
    sink = JsonlSink(tmp_path, now_ns=lambda: stamp, fsync="none")
    log = RequestLog(sink, queue_size=N, batch_size=256, flush_interval_s=0)
    await log.start()
    accepted, elapsed = _submit_all(log, _records(N))
    await log.close(timeout=10)
    assert accepted == N and elapsed < 1.0
    assert log.written == 0 and log.failed == N and log.dropped == 0
    assert "No space left" in log.last_error
    _accounted(log, N)


def _tensor(n: int) -> dict[str, Any]:
    return {"datatype": "FP32", "shape": [n], "data": [0.125] * n}


async def test_a_record_over_max_record_bytes_is_cut_to_fit_and_counted() -> None:
    sink = MemorySink()
    log = RequestLog(sink, flush_interval_s=0, max_record_bytes=4096)
    await log.start()
    big = {"id": "big", "inputs": {"a": _tensor(2000), "b": _tensor(3)}, "outputs": {"y": _tensor(600)}}
    log.submit(big)
    log.submit(lambda: {"id": "built", "nodes": {"n": {"outputs": {"t": _tensor(900)}}}})
    log.submit({"id": "small", "inputs": {"a": _tensor(3)}})
    await log.close()
    first, built, small = sink.records
    assert first["truncated"] == ["inputs.a"] and first["outputs"]["y"] == _tensor(600)
    assert first["inputs"]["a"] == {
        "datatype": "FP32",
        "shape": [2000],
        "truncated": True,
        "elements": 2000,
        "bytes": len(encode_line(_tensor(2000))) - 1,
    }
    assert built["truncated"] == ["n.t"] and "data" not in built["nodes"]["n"]["outputs"]["t"]
    assert small == {"id": "small", "inputs": {"a": _tensor(3)}}
    assert all(len(encode_line(r)) <= 4096 for r in sink.records)
    assert log.counters()["truncated"] == 2 and log.written == 3


async def test_an_unserialisable_record_still_fails_in_the_sink_and_0_is_no_cap(tmp_path: Path) -> None:
    log = RequestLog(JsonlSink(tmp_path, fsync="none"), flush_interval_s=0, max_record_bytes=0)
    await log.start()
    log.submit({"id": "odd", "value": object()})
    log.submit({"id": "huge", "inputs": {"a": _tensor(300_000)}})
    await log.close()
    assert (log.written, log.failed, log.truncated) == (1, 1, 0)
    (written,) = await asyncio.to_thread(lambda: list(tmp_path.glob("*.jsonl")))
    assert written.stat().st_size > 1_000_000  # no cap: the whole tensor


def test_settings_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        RequestLog(MemorySink(), queue_size=0)
    with pytest.raises(ValueError, match=r"'max_record_bytes' must be 0 \(no cap\) or at least 1024"):
        RequestLog(MemorySink(), max_record_bytes=100)
    with pytest.raises(ValueError, match="'max_record_bytes' must be a whole number"):
        request_log_from_config({"sink": "jsonl", "directory": str(tmp_path), "max_record_bytes": "1MB"})
