"""The request log under an unlucky operator: logrotate moves the file, someone deletes the
directory, the directory is unwritable. Records land where they can be read, or start-up fails."""

from __future__ import annotations

import http.server
import json
import shutil
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as triton

from engine import cli
from engine.observability.log_reader import read_records
from engine.observability.record_cap import encode_line
from tests.adapters.proxy import stalling_store
from tests.integration.held_graph import held_inputs, held_repository
from tests.server_thread import ServerThread


@pytest.fixture
def graphs(tmp_path: Path, example_graphs: Path) -> Path:
    root = tmp_path / "graphs"
    shutil.copytree(example_graphs / "quickstart", root / "quickstart")
    graph = root / "quickstart" / "graph.yaml"
    graph.write_text(graph.read_text() + "logging:\n  sample: 1.0\n")
    return root


@pytest.fixture
def logged(graphs: Path, tmp_path: Path) -> Iterator[tuple[ServerThread, Path]]:
    directory = tmp_path / "logs"
    config = {"sink": "jsonl", "directory": str(directory), "flush_interval_s": 0.01}
    with ServerThread(graphs, request_log=config) as server:
        yield server, directory


def _call(server: ServerThread, request_id: str) -> None:
    client = triton.InferenceServerClient(server.url)
    x = triton.InferInput("x", [1, 4], "FP32")
    x.set_data_from_numpy(np.zeros((1, 4), np.float32))
    client.infer("quickstart", [x], request_id=request_id)
    client.close()


def _written(server: ServerThread, count: int) -> None:
    assert server.server is not None and server.server.request_log is not None
    deadline = time.monotonic() + 30  # generous: the machine may be shared
    while server.server.request_log.counters().get("written", 0) < count:
        assert time.monotonic() < deadline, server.server.request_log.counters()
        time.sleep(0.01)


def _ids(files: list[Path]) -> list[str]:
    return [json.loads(line)["id"] for f in files for line in f.read_text().splitlines()]


def test_a_rotated_away_file_is_let_go_and_a_deleted_directory_made_again(
    logged: tuple[ServerThread, Path],
) -> None:
    server, directory = logged
    _call(server, "first")
    _written(server, 1)
    (current,) = directory.glob("*.jsonl")
    moved = current.with_name(current.name + ".1")
    current.rename(moved)  # what logrotate does (without copytruncate)
    _call(server, "second")
    _written(server, 2)
    assert _ids([moved]) == ["first"]
    assert _ids(sorted(directory.glob("*.jsonl"))) == ["second"]
    shutil.rmtree(directory)
    _call(server, "third")
    _written(server, 3)
    assert _ids(sorted(directory.glob("*.jsonl"))) == ["third"]  # "written" means on disk


def test_an_unwritable_directory_fails_the_start(graphs: Path) -> None:
    unwritable = Path("/sys/kernel")  # exists, and not even root may create a file in it
    if not unwritable.is_dir():
        pytest.skip("no /sys/kernel on this machine")
    server = ServerThread(graphs, request_log={"sink": "jsonl", "directory": str(unwritable)})
    try:
        with pytest.raises(ValueError, match=r"request_log: sink jsonl: .*Permission denied"):
            server.start()
    finally:
        server.stop()


def test_the_log_readers_read_the_parquet_sink_and_fail_loudly_on_what_they_cannot_read(
    graphs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = tmp_path / "parquet-logs"
    config = {"sink": "parquet", "directory": str(directory), "flush_interval_s": 0.01}
    with ServerThread(graphs, request_log=config) as server:
        for request_id in ("p1", "p2", "p3"):
            _call(server, request_id)
        _written(server, 3)
    capsys.readouterr()
    assert cli.main(["logs", "query", str(directory), "--json"]) == 0
    out = capsys.readouterr()
    assert sorted(json.loads(line)["id"] for line in out.out.splitlines()) == ["p1", "p2", "p3"]
    assert "3 records" in out.err
    assert cli.main(["logs", "tail", str(directory), "-n", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["graph"] == "quickstart"
    assert cli.main(["shadow", "report", "--from", str(directory)]) == 0
    assert "3 records read" in capsys.readouterr().err

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "requests-1.parquet").write_bytes(b"not parquet at all")
    assert cli.main(["logs", "query", str(broken)]) != 0
    assert "cannot read" in capsys.readouterr().err
    assert cli.main(["shadow", "report", "--from", str(broken)]) != 0
    assert "cannot read" in capsys.readouterr().err
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("hello")
    assert cli.main(["logs", "tail", str(other)]) != 0
    assert "no request-log files" in capsys.readouterr().err


def test_shed_calls_are_recorded_and_records_are_capped(tmp_path: Path, example_graphs: Path) -> None:
    directory = tmp_path / "held-logs"
    with stalling_store(6379) as (proxy, proxy_loop):
        root = tmp_path / "held-graphs"
        folder = held_repository(root, proxy.port)
        graph = folder / "graph.yaml"
        graph.write_text(graph.read_text() + "logging:\n  sample: 1.0\n  always_on: [error]\n")
        config = {"sink": "jsonl", "directory": str(directory), "flush_interval_s": 0.01}
        with ServerThread(
            root, request_log=config, max_concurrency=1, max_queue=0, max_message_bytes=16_000_000
        ) as server:
            client = triton.InferenceServerClient(server.url)
            huge = held_inputs(rows=1)
            huge[1].set_data_from_numpy(np.array([[b"k" * 5_000_000]], dtype=np.object_))  # one 5 MB element
            client.infer("held", huge, request_id="x" * 1000)
            proxy_loop.soon(proxy.stall)
            with ThreadPoolExecutor(1) as pool:
                holding = pool.submit(client.infer, "held", held_inputs(), request_id="held")
                state = server.server.state
                while state.in_flight < 1:
                    time.sleep(0.01)
                with pytest.raises(triton.InferenceServerException) as shed:
                    client.infer("held", held_inputs(), request_id="shed")
                proxy_loop.soon(proxy.resume)
                holding.result(30)
            _written(server, 3)
            client.close()
    assert shed.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
    files = sorted(directory.glob("*.jsonl"))
    lines = [line for f in files for line in f.read_text().splitlines()]
    records = {r["status"] + ":" + r["id"][:8]: r for r in map(json.loads, lines)}
    assert records["RESOURCE_EXHAUSTED:shed"]["error"].startswith("server at capacity")
    big = records["OK:" + "x" * 8]
    assert big["id"] == "x" * 256
    assert big["inputs"]["k"]["truncated"] and big["inputs"]["k"]["element_bytes"] == 5_000_000
    assert max(len(line) for line in lines) < 20_000  # not a 5 MB line


CAP = 256 * 1024  # request_log.max_record_bytes in the test below (the default is 1 MiB)


class _Collector(http.server.BaseHTTPRequestHandler):
    """A CloudEvents receiver that keeps every body it is sent."""

    protocol_version = "HTTP/1.1"
    bodies: list[bytes] = []

    def do_POST(self) -> None:
        _Collector.bodies.append(self.rfile.read(int(self.headers["content-length"])))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.mark.parametrize("sink", ["jsonl", "parquet", "cloudevents"])
def test_a_record_over_max_record_bytes_has_its_largest_tensors_summarised(
    graphs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], sink: str
) -> None:
    graph = graphs / "quickstart" / "graph.yaml"  # every node's outputs, and whole tensors
    graph.write_text(graph.read_text() + "  nodes: true\n  max_tensor_elements: 1000000\n")
    directory = tmp_path / "capped-logs"
    receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    _Collector.bodies = []
    where = (
        {"url": f"http://127.0.0.1:{receiver.server_address[1]}/"}
        if sink == "cloudevents"
        else {"directory": str(directory)}
    )
    config = {"sink": sink, **where, "flush_interval_s": 0.01, "max_record_bytes": CAP}
    rows = 5000  # x is 20,000 floats: its JSON alone is ~400 KB; the whole record ~1.2 MB
    with ServerThread(graphs, request_log=config) as server:
        client = triton.InferenceServerClient(server.url)
        x = triton.InferInput("x", [rows, 4], "FP32")
        x.set_data_from_numpy(np.random.default_rng(7).random((rows, 4), dtype=np.float32))
        client.infer("quickstart", [x], request_id="big")
        _call(server, "small")
        client.close()
        _written(server, 2)
        assert server.server is not None and server.server.request_log is not None
        assert server.server.request_log.counters()["truncated"] == 1
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{server.server.metrics_port}/metrics").read()
    receiver.shutdown()
    assert b"engine_request_log_truncated_records_total 1.0" in metrics

    if sink == "cloudevents":
        assert max(len(body) for body in _Collector.bodies) <= CAP  # what the receiver was sent
        records = {r["id"]: r for r in map(json.loads, _Collector.bodies)}
    else:
        records = {r["id"]: r for r in read_records(directory)}
    big, small = records["big"], records["small"]
    assert "truncated" not in small and small["inputs"]["x"]["data"] == [[0.0] * 4]
    assert len(encode_line(big)) <= CAP  # as the JSON Lines sink writes it
    if sink == "jsonl":
        assert max(len(line) for f in directory.glob("*.jsonl") for line in f.read_bytes().splitlines()) < CAP
    # Named by their policy paths; the largest went first, and only as many as it took.
    assert big["truncated"][0] == "inputs.x"
    tensors = {
        **{f"inputs.{k}": v for k, v in big["inputs"].items()},
        **{f"outputs.{k}": v for k, v in big["outputs"].items()},
        **{f"{n}.{k}": v for n, e in big["nodes"].items() for k, v in e["outputs"].items()},
    }
    cut = {path: tensors[path] for path in big["truncated"]}
    kept = {path: t for path, t in tensors.items() if path not in cut}
    assert cut["inputs.x"] == {
        "datatype": "FP32",
        "shape": [rows, 4],
        "truncated": True,
        "elements": rows * 4,
        "bytes": cut["inputs.x"]["bytes"],
    }
    assert cut["inputs.x"]["bytes"] > CAP
    assert kept, "everything was summarised: the cap should have left room for something"
    smallest_cut = min(t["bytes"] for t in cut.values())
    for path, tensor in kept.items():
        assert len(tensor["data"]) == rows, path  # whole: every row is still there
        assert len(encode_line(tensor)) - 1 <= smallest_cut, path
    # The rest of the record is as it would have been.
    assert (big["graph"], big["version"], big["status"], big["error"]) == ("quickstart", "1", "OK", "")
    assert set(big["models"]) == {"embed", "classify"} and big["sampled_because"] == "sample"
    assert {n: e["rows"] for n, e in big["nodes"].items()} == dict.fromkeys(
        ("embed", "clipped", "classify"), rows
    )

    if sink == "cloudevents":
        return
    capsys.readouterr()  # the readers take such a record like any other
    assert cli.main(["logs", "query", str(directory), "--id", "big", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["truncated"] == big["truncated"]
    assert cli.main(["shadow", "report", "--from", str(directory)]) == 0
    assert "2 records read" in capsys.readouterr().err


class _Receiver(http.server.BaseHTTPRequestHandler):
    """A CloudEvents receiver that answers its first POST 429 with Retry-After: 1, then 200."""

    protocol_version = "HTTP/1.1"  # keep-alive
    arrivals: list[tuple[float, int, str]] = []  # (time, client port, ce-id)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["content-length"]))
        _Receiver.arrivals.append((time.monotonic(), self.client_address[1], self.headers["ce-id"]))
        first = len(_Receiver.arrivals) == 1
        self.send_response(429 if first else 200)
        if first:
            self.send_header("retry-after", "1")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_cloudevents_honours_retry_after_over_one_pooled_connection(graphs: Path) -> None:
    receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    _Receiver.arrivals = []
    url = f"http://127.0.0.1:{receiver.server_address[1]}/"
    config = {
        "sink": "cloudevents",
        "url": url,
        "flush_interval_s": 0.01,
        "backoff_s": 0.05,
        "timeout_s": 10.0,
    }
    try:
        with ServerThread(graphs, request_log=config) as server:
            for request_id in ("c1", "c2", "c3", "c4"):
                _call(server, request_id)
            _written(server, 4)
    finally:
        receiver.shutdown()
    first, retried = _Receiver.arrivals[0], _Receiver.arrivals[1]
    assert first[2] == retried[2] == "c1"
    assert retried[0] - first[0] >= 0.95  # waited the second it was asked for, not the 50 ms backoff
    assert len({port for _, port, _ in _Receiver.arrivals}) == 1  # one kept-alive connection
