"""Signals an impatient operator sends: a second SIGTERM/SIGINT ends a drain at once, for one
process and for a --workers fleet, saying how many calls it abandoned."""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

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

GRACE_S = 60.0  # a first signal alone would wait this long for the held calls
ABANDONED = re.compile(r"abandoning (\d+) call\(s\) in flight")


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
    engine.wait_for(ABANDONED, count=workers)  # every worker says what it abandoned: 2 in all
    assert sum(int(m.group(1)) for m in map(ABANDONED.search, engine.lines) if m) == 2, engine.log
    assert "stopped" in engine.log
