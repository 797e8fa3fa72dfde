"""Feature stores under a stampede and behind bad addresses, against a live server and real Redis."""

from __future__ import annotations

import logging
import re
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as triton

from tests.adapters.proxy import stalling_store
from tests.integration.test_features_graph import (
    _load_users,
    _repository,
    _request,
    prefix,  # noqa: F401 - the fixture
)
from tests.server_thread import ServerThread

CALLERS = 24


def _patient(root: Path) -> None:
    """The fraud graph's user node waits up to 20 s for its store (the test holds the store)."""
    graph = root / "fraud" / "graph.yaml"
    graph.write_text(graph.read_text().replace("    timeout: 20ms\n", "    timeout: 20s\n", 1))


def test_a_stampede_on_one_missing_key_fetches_it_once(
    tmp_path: Path,
    example_graphs: Path,
    prefix: str,  # noqa: F811
) -> None:
    with stalling_store(6379) as (proxy, proxy_loop):
        root = _repository(tmp_path, example_graphs, proxy.port, prefix, "default")
        _patient(root)
        _load_users(root)
        amount, txn = np.array([[20.0]], np.float32), np.array([[0.1, 0, 14]], np.float32)
        with ServerThread(root, max_concurrency=0) as server:
            client = triton.InferenceServerClient(server.url)
            client.infer("fraud", _request(amount, ["u0001"], txn))  # connected; u0007 not cached
            state = server.server.state
            proxy_loop.soon(proxy.stall)

            def call(_: int) -> np.ndarray:
                c = triton.InferenceServerClient(server.url)
                try:
                    return c.infer("fraud", _request(amount, ["u0007"], txn), client_timeout=30).as_numpy(
                        "score"
                    )
                finally:
                    c.close()

            with ThreadPoolExecutor(CALLERS) as pool:
                futures = [pool.submit(call, i) for i in range(CALLERS)]
                deadline = time.monotonic() + 20
                while state.in_flight < CALLERS and time.monotonic() < deadline:
                    time.sleep(0.01)
                time.sleep(0.2)  # every caller has missed the cache and asked (or waits)
                sent = proxy.held
                proxy_loop.soon(proxy.resume)
                scores = [f.result(30) for f in futures]
            client.close()
    assert state.in_flight == 0
    assert sent == 1, f"{sent} fetches reached the store for one key"
    assert all(np.array_equal(s, scores[0]) for s in scores)


def test_a_store_failure_names_node_source_and_kind_but_no_address(
    tmp_path: Path,
    example_graphs: Path,
    prefix: str,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    root = _repository(tmp_path, example_graphs, port, prefix, "fail")
    amount, txn = np.array([[20.0]], np.float32), np.array([[0.1, 0, 14]], np.float32)
    with ServerThread(root) as server, caplog.at_level(logging.WARNING, logger="engine.features"):
        client = triton.InferenceServerClient(server.url)
        with pytest.raises(triton.InferenceServerException) as caught:
            client.infer("fraud", _request(amount, ["u0001"], txn), client_timeout=10)
        client.close()
    message = caught.value.message()
    assert caught.value.status() == "StatusCode.UNAVAILABLE"
    assert "node 'user'" in message and "feature source 'users'" in message and "unreachable" in message
    assert str(port) not in message and "127.0.0.1" not in message and "Error" not in message, message
    error_id = re.search(r"error id ([0-9a-f]{12})", message)
    assert error_id is not None
    assert any(error_id.group(1) in r.getMessage() and str(port) in r.getMessage() for r in caplog.records)


def test_stores_are_dialled_at_start_up_and_a_hung_one_does_not_keep_a_graph_from_serving(
    tmp_path: Path,
    example_graphs: Path,
    prefix: str,  # noqa: F811
) -> None:
    with stalling_store(6379) as (proxy, proxy_loop):
        proxy_loop.soon(proxy.stall)  # the store hangs from the start
        root = _repository(tmp_path, example_graphs, proxy.port, prefix, "default")
        amount, txn = np.array([[20.0]], np.float32), np.array([[0.1, 0, 14]], np.float32)
        with ServerThread(root) as server:
            dialled = proxy.held  # bytes sent to the store before any request: the start-up connect
            client = triton.InferenceServerClient(server.url)
            assert client.is_model_ready("fraud")
            score = client.infer("fraud", _request(amount, ["u0001"], txn), client_timeout=10).as_numpy(
                "score"
            )
            client.close()
            proxy_loop.soon(proxy.resume)
    assert dialled >= 1
    assert score is not None and score.shape == (1, 1)  # served on defaults (the node timed out)
