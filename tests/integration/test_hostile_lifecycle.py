"""Signals and files an impatient operator sends: a second SIGTERM/SIGINT ends a drain at once, for
one process and for a --workers fleet, saying how many calls it abandoned; with nothing in flight
the process is gone soon after it says ``stopped``; polling reads a file once it has settled and
logs a broken one once per change."""

from __future__ import annotations

import logging
import re
import shutil
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import tritonclient.grpc as triton

from tests.adapters.proxy import stalling_store
from tests.integration.held_graph import held_repository
from tests.integration.test_lifecycle import (
    SERVING,
    TIMEOUT,
    EngineProcess,
    eventually,
    free_port,
    infer_held,
    launch,  # noqa: F401 - the fixture
)
from tests.server_thread import ServerThread

GRACE_S = 60.0  # a first signal alone would wait this long for the held calls
ABANDONED = re.compile(r"abandoning (\d+) call\(s\) in flight")
STOPPED = re.compile(r"\] stopped$")
EXIT_AFTER_STOPPED_S = 1.0
"""Generous: ~0.12 s measured here (interpreter teardown after the last log line); 1.7 s was reported."""


@pytest.mark.parametrize("workers", [1, 2])
def test_a_second_signal_ends_the_drain_at_once_counting_what_it_abandoned(
    launch: Callable[..., EngineProcess],  # noqa: F811
    tmp_path: Path,
    example_graphs: Path,
    workers: int,
) -> None:
    with stalling_store(6379) as (proxy, proxy_loop):
        root = tmp_path / "graphs"
        held_repository(root, proxy.port, quickstart=example_graphs / "quickstart")
        port = free_port()
        engine = launch(str(root), "--port", str(port), "--workers", str(workers), "--grace", str(GRACE_S))
        engine.wait_for(SERVING, count=workers)
        url = f"127.0.0.1:{port}"
        infer_held(url)  # connected to the store
        proxy_loop.soon(proxy.stall)
        with ThreadPoolExecutor(2) as pool:
            calls = [pool.submit(infer_held, url) for _ in range(2)]
            eventually(lambda: proxy.held >= 2, "both calls to reach the store")
            engine.proc.send_signal(signal.SIGTERM)
            engine.wait_for(re.compile(r"draining: [1-9]\d* call\(s\) in flight"))
            signalled = time.monotonic()
            engine.proc.send_signal(signal.SIGINT)
            assert engine.proc.wait(TIMEOUT) == 0
            took = time.monotonic() - signalled
            for call in calls:
                assert call.exception(TIMEOUT) is not None  # cut off: they never got an answer
            proxy_loop.soon(proxy.resume)
    engine.stop()
    assert took < GRACE_S / 2, engine.log  # not the grace: the second signal ended it
    # Each worker still draining says what it abandoned: 2 in all. (Both calls may land on one
    # worker; another with nothing in flight can finish its drain before the second signal.)
    engine.wait_for(ABANDONED)
    assert sum(int(m.group(1)) for m in map(ABANDONED.search, engine.lines) if m) == 2, engine.log
    assert "stopped" in engine.log


def test_with_nothing_in_flight_the_process_exits_soon_after_it_logs_stopped(
    launch: Callable[..., EngineProcess],  # noqa: F811
    tmp_path: Path,
    example_graphs: Path,
) -> None:
    root = tmp_path / "graphs"
    shutil.copytree(example_graphs / "quickstart", root / "quickstart")
    engine = launch(str(root), "--port", "0", "--workers", "1")
    client = triton.InferenceServerClient(f"127.0.0.1:{engine.serving_port()}")
    assert client.is_server_ready()
    client.close()
    engine.proc.send_signal(signal.SIGTERM)
    engine.wait_for(STOPPED)
    logged = time.monotonic()
    assert engine.proc.wait(TIMEOUT) == 0
    took = time.monotonic() - logged
    assert took < EXIT_AFTER_STOPPED_S, f"exited {took:.2f} s after 'stopped':\n{engine.log}"


def _rejections(caplog: pytest.LogCaptureFixture) -> int:
    return sum("rejected" in r.getMessage() for r in caplog.records if r.name == "engine.repository")


def test_polling_logs_a_broken_file_once_and_lets_a_file_settle_before_reading_it(
    tmp_path: Path, example_graphs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "graphs"
    shutil.copytree(example_graphs / "quickstart", root / "quickstart")
    graph = root / "quickstart" / "graph.yaml"
    good = graph.read_text()
    with caplog.at_level(logging.WARNING), ServerThread(root, reload_interval_s=0.05) as server:
        graph.write_text(good.replace("version: 1", "version: 2").replace("clip(", "clop("))  # broken
        time.sleep(2.0)  # 40 polls
        assert _rejections(caplog) == 1, [r.getMessage() for r in caplog.records]
        client = triton.InferenceServerClient(server.url)
        assert client.get_model_metadata("quickstart").versions == ["1"]  # the old one serves on
        rows = [
            m for m in client.get_model_repository_index(as_json=True)["models"] if m["name"] == "quickstart"
        ]
        # and the reason stays in the index (the rejected version has its own row beside the serving one)
        assert any("clop" in m.get("reason", "") for m in rows), rows
        caplog.clear()
        fixed = good.replace("version: 1", "version: 3")
        half = len(fixed) // 2
        with graph.open("w") as writing:  # a slow writer: half now, the rest 0.2 s later
            writing.write(fixed[:half])
            writing.flush()
            time.sleep(0.2)
            writing.write(fixed[half:])
        deadline = time.monotonic() + 10
        while client.get_model_metadata("quickstart").versions != ["3"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.get_model_metadata("quickstart").versions == ["3"]
        assert _rejections(caplog) == 0, [r.getMessage() for r in caplog.records]  # never read half
        client.close()
