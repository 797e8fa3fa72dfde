"""The request-log sinks against real files and a real HTTP receiver; reading the files back."""

from __future__ import annotations

import argparse
import asyncio
import gzip
import http.server
import json
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from engine.cli import logs as logs_cli
from engine.observability.log_config import recorder_options, request_log_from_config, sink_from_config
from engine.observability.log_reader import ReadStats, log_files, read_records
from engine.observability.log_sinks import JsonlSink
from engine.observability.log_sinks_http import CE_TYPE, CloudEventsSink
from engine.observability.request_log import RequestLog, SinkWriteError


def _record(i: int, graph: str = "fraud", status: str = "OK") -> dict[str, Any]:
    return {
        "schema": "engine.request/1",
        "id": f"r{i:05d}",
        "trace_id": "",
        "time": f"2026-01-01T00:{i // 60 % 60:02d}:{i % 60:02d}.000000Z",
        "graph": graph,
        "version": "1",
        "models": {},
        "inputs": {"amount": {"datatype": "FP32", "shape": [1, 1], "data": [[float(i)]]}},
        "features": {},
        "branches": {},
        "outputs": {},
        "shadow": {},
        "status": status,
        "error": "" if status == "OK" else "bad input",
        "latency_us": i,
        "sampled_because": "sample" if status == "OK" else "error",
    }


def _cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="engine")
    logs_cli.add_parser(parser.add_subparsers())
    args = parser.parse_args(list(argv))
    return int(args.run(args))


async def test_rotation_by_size_and_gzip_read_back_in_order(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    sink = JsonlSink(tmp_path, rotate_bytes=20_000, gzip=True, fsync="batch")
    log = RequestLog(sink, batch_size=50, flush_interval_s=0)
    await log.start()
    for i in range(600):
        assert log.submit(_record(i, status="OK" if i % 7 else "INVALID_ARGUMENT"))
        if i % 50 == 49:
            await asyncio.sleep(0.005)
    await log.close(timeout=10)
    assert (log.written, log.dropped, log.failed) == (600, 0, 0)
    files = log_files(tmp_path)
    assert len(files) >= 5 and all(f.name.endswith(".jsonl.gz") for f in files)
    assert all(len(gzip.decompress(f.read_bytes())) <= 20_000 for f in files)
    ids = [r["id"] for r in read_records(tmp_path)]
    assert ids == [f"r{i:05d}" for i in range(600)]

    assert _cli("logs", "tail", str(tmp_path), "-n", "3") == 0
    out, err = capsys.readouterr()
    assert [json.loads(line)["id"] for line in out.splitlines()] == ["r00597", "r00598", "r00599"]
    assert "600 records" in err

    assert _cli("logs", "query", str(tmp_path), "--status", "invalid_argument", "--since",
                "2026-01-01T00:01:00Z", "--until", "2026-01-01T00:02:00Z", "--json") == 0  # fmt: skip
    out, _ = capsys.readouterr()
    got = [json.loads(line) for line in out.splitlines()]
    assert [r["id"] for r in got] == [f"r{i:05d}" for i in range(60, 120) if i % 7 == 0]
    assert _cli("logs", "query", str(tmp_path), "--id", "r00042", "--graph", "fraud") == 0
    out, _ = capsys.readouterr()
    assert out.count("\n") == 1 and "r00042  fraud:1  INVALID_ARGUMENT  42us  bad input" in out


def test_a_truncated_last_line_is_skipped_and_counted(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    sink = JsonlSink(tmp_path)
    sink.write([_record(1), _record(2)])
    path = sink.path
    assert path is not None
    sink.close()
    with path.open("ab") as f:  # what a kill -9 in the middle of a write leaves
        f.write(json.dumps(_record(3)).encode()[:40])
    stats = ReadStats()
    assert [r["id"] for r in read_records(tmp_path, stats)] == ["r00001", "r00002"]
    assert (stats.records, stats.truncated, stats.corrupt) == (2, 1, 0)
    assert _cli("logs", "tail", str(tmp_path)) == 0
    assert "1 truncated last lines skipped" in capsys.readouterr().err
    # a restarted writer that reopens the file ends the partial line first; new records stay whole
    again = JsonlSink(tmp_path, now_ns=lambda: _stamp_of(path))
    again.write([_record(4)])
    again.close()
    stats = ReadStats()
    assert [r["id"] for r in read_records(tmp_path, stats)] == ["r00001", "r00002", "r00004"]
    assert (stats.truncated, stats.corrupt) == (0, 1)


def _stamp_of(path: Path) -> int:
    text = path.name.split("-")[1]
    when = datetime.strptime(text, "%Y%m%dT%H%M%S%fZ").replace(tzinfo=UTC)
    return int(when.timestamp()) * 1_000_000_000 + when.microsecond * 1000


def test_rotation_by_time(tmp_path: Path) -> None:
    sink = JsonlSink(tmp_path, rotate_interval_s=0.05)
    sink.write([_record(1)])
    time.sleep(0.1)
    sink.write([_record(2)])
    sink.close()
    assert len(log_files(tmp_path)) == 2
    assert [r["id"] for r in read_records(tmp_path)] == ["r00001", "r00002"]


def test_to_parquet(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    sink = JsonlSink(tmp_path / "logs")
    sink.write([_record(i) for i in range(5)])
    sink.close()
    out = tmp_path / "out.parquet"
    assert _cli("logs", "to-parquet", str(tmp_path / "logs"), str(out)) == 0
    table = pq.read_table(out)
    assert table.num_rows == 5
    assert table.column("id").to_pylist() == [f"r{i:05d}" for i in range(5)]
    assert table.column("latency_us").to_pylist() == list(range(5))
    assert json.loads(table.column("inputs").to_pylist()[3])["amount"]["data"] == [[3.0]]
    assert str(table.schema.field("time").type) == "timestamp[us, tz=UTC]"


async def test_parquet_sink_writes_one_file_per_batch(tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    log = RequestLog(sink_from_config({"sink": "parquet", "directory": str(tmp_path)}), batch_size=10)
    await log.start()
    for i in range(25):
        log.submit(_record(i))
    await log.close()
    files = _parquet_files(tmp_path)
    assert log.written == 25 and len(files) == 3
    assert sum(pq.read_table(f).num_rows for f in files) == 25


def _parquet_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.parquet"))


# -- CloudEvents against a real receiver --------------------------------------------------------


class Receiver(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, answers: list[int], stall_s: float = 0.0) -> None:
        self.answers = answers  # status codes to give, in turn; 200 once used up
        self.stall_s = stall_s
        self.got: list[tuple[dict[str, str], bytes]] = []
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/log"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        if self.server.stall_s:
            time.sleep(self.server.stall_s)
        with self.server.lock:
            self.server.got.append(({k.lower(): v for k, v in self.headers.items()}, body))
            code = self.server.answers.pop(0) if self.server.answers else 200
        self.send_response(code)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver(request: pytest.FixtureRequest) -> Iterator[Receiver]:
    answers, stall = getattr(request, "param", ([], 0.0))
    server = Receiver(list(answers), stall)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


async def test_cloudevents_headers_and_body(receiver: Receiver) -> None:
    log = RequestLog(CloudEventsSink(receiver.url, source="/engine/test"), flush_interval_s=0)
    await log.start()
    for i in range(3):
        log.submit(_record(i))
    await log.close(timeout=10)
    assert log.written == 3
    headers, body = receiver.got[1]
    assert headers["ce-specversion"] == "1.0"
    assert headers["ce-type"] == CE_TYPE == "org.graph-engine.request.v1"
    assert headers["ce-source"] == "/engine/test"
    assert headers["ce-id"] == "r00001"
    assert headers["ce-time"] == "2026-01-01T00:00:01.000000Z"
    assert headers["content-type"] == "application/json"
    assert json.loads(body) == _record(1)


@pytest.mark.parametrize("receiver", [([500, 503], 0.0)], indirect=True)
def test_cloudevents_retries_5xx_with_backoff(receiver: Receiver) -> None:
    sink = CloudEventsSink(receiver.url, backoff_s=0.05, backoff_max_s=0.2)
    t0 = time.perf_counter()
    sink.write([_record(7)])
    assert time.perf_counter() - t0 >= 0.05 + 0.1  # slept between attempts, doubling
    assert sink.attempts == 3 and sink.sent == 1
    assert [json.loads(b)["id"] for _, b in receiver.got] == ["r00007"] * 3


@pytest.mark.parametrize("receiver", [([400], 0.0)], indirect=True)
def test_cloudevents_does_not_retry_a_client_error(receiver: Receiver) -> None:
    sink = CloudEventsSink(receiver.url, backoff_s=0.01)
    with pytest.raises(SinkWriteError, match="HTTP 400") as info:
        sink.write([_record(1), _record(2)])
    assert info.value.failed == 1 and sink.attempts == 2 and sink.sent == 1


@pytest.mark.parametrize("receiver", [([], 5.0)], indirect=True)
async def test_cloudevents_stalled_receiver_is_bounded_and_counted(receiver: Receiver) -> None:
    sink = CloudEventsSink(receiver.url, timeout_s=0.2, max_attempts=2, backoff_s=0.05, backoff_max_s=5)
    log = RequestLog(sink, queue_size=100, batch_size=10, flush_interval_s=0)
    await log.start()
    t0 = time.perf_counter()
    accepted = sum(log.submit(_record(i)) for i in range(1000))
    assert time.perf_counter() - t0 < 1.0 and accepted == 100
    for _ in range(2000):  # up to 10 s: the first record times out twice (~0.45 s), then the
        await asyncio.sleep(0.005)  # endpoint counts as down
        if log.failed >= 10:
            break
    assert log.failed >= 10 and sink.attempts == 2
    await log.close(timeout=2)
    assert log.written + log.dropped + log.failed == 1000 and log.written == 0


def test_unreachable_receiver_fails_after_bounded_attempts() -> None:
    sink = CloudEventsSink("http://127.0.0.1:9/", timeout_s=0.2, max_attempts=3, backoff_s=0.01)
    with pytest.raises(SinkWriteError) as info:
        sink.write([_record(1)])
    assert info.value.failed == 1 and sink.attempts == 3


# -- configuration ------------------------------------------------------------------------------


def test_parquet_without_pyarrow_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as if it were not installed
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(ValueError, match="need pyarrow: pip install pyarrow"):
        sink_from_config({"sink": "parquet", "directory": str(tmp_path)})


def test_sink_from_config(tmp_path: Path) -> None:
    assert isinstance(sink_from_config({"directory": str(tmp_path), "gzip": True}), JsonlSink)
    ce = sink_from_config({"sink": "cloudevents", "url": "http://x:1/", "max_attempts": 2})
    assert isinstance(ce, CloudEventsSink) and ce.max_attempts == 2
    log = request_log_from_config({"sink": "jsonl", "directory": str(tmp_path), "queue_size": 5})
    assert log.queue_size == 5
    assert recorder_options({"directory": "x", "shadow_wait_s": 30}) == {"shadow_wait_s": 30}
    assert recorder_options({"directory": "x"}) == {}


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"sink": "jsonll", "directory": "x"}, "unknown sink 'jsonll'; did you mean 'jsonl'?"),
        (
            {"directory": "x", "rotate_byte": 5},
            "unknown key 'rotate_byte' for sink jsonl; did you mean 'rotate_bytes'?",
        ),
        ({"sink": "jsonl"}, "needs 'directory'"),
        ({"directory": "x", "fsync": "sometimes"}, "fsync must be one of none, batch, always"),
        ({"directory": "x", "gzip": "yes"}, "'gzip' must be true or false"),
        ({"directory": "x", "file_pattern": "log.jsonl"}, "must contain {time}"),
        ({"sink": "cloudevents", "url": "ftp://x"}, "must be http:// or https://"),
        ({"sink": "cloudevents", "url": "http://x", "max_attempts": 0}, "max_attempts >= 1"),
        ({"directory": "x", "queue_size": "big"}, "'queue_size' must be a whole number"),
        ({"directory": "x", "shadow_wait_s": "5s"}, "'shadow_wait_s' must be a number"),
        ({"directory": "x", "shadow_wait_s": 0}, "'shadow_wait_s' must be greater than 0"),
        ({"directory": "x", "shadow_wait": 5}, "did you mean 'shadow_wait_s'?"),
    ],
)
def test_bad_config_is_a_clear_error(tmp_path: Path, config: dict[str, Any], message: str) -> None:
    if "directory" in config:
        config = {**config, "directory": str(tmp_path / config["directory"])}
    with pytest.raises(ValueError) as info:
        request_log_from_config(config)
    assert message in str(info.value)
