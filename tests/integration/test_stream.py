"""``ModelStreamInfer`` through tritonclient.grpc's streaming API, as perf_analyzer --streaming and
high-rate clients use it: answers in order, failures in their own message, deadline, cancellation."""

from __future__ import annotations

import queue
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as triton

from engine.protocol.inference import STREAM_WINDOW
from tests.integration.slow_model import ROWS, WIDTH, slow_graph
from tests.server_thread import ServerThread

Answer = tuple[Any, Any]  # (InferResult | None, InferenceServerException | None)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, example_graphs: Path) -> Iterator[ServerThread]:
    root = tmp_path_factory.mktemp("graphs")
    shutil.copytree(example_graphs / "quickstart", root / "quickstart")
    slow_graph(root / "slow")
    with ServerThread(root) as running:
        yield running


def _x(value: float, columns: int = 4) -> triton.InferInput:
    tensor = triton.InferInput("x", [1, columns], "FP32")
    tensor.set_data_from_numpy(np.full((1, columns), value, np.float32))
    return tensor


def _slow() -> list[triton.InferInput]:
    tensor = triton.InferInput("x", [ROWS, WIDTH], "FP32")
    tensor.set_data_from_numpy(np.ones((ROWS, WIDTH), np.float32))
    return [tensor]


def _stream(server: ServerThread, **options: Any) -> tuple[triton.InferenceServerClient, queue.Queue[Answer]]:
    client = triton.InferenceServerClient(server.url)
    answers: queue.Queue[Answer] = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)), **options)
    return client, answers


def _wait_for(condition: Any, what: str, seconds: float = 30.0) -> None:
    end = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def test_every_message_is_answered_in_order_and_a_failure_keeps_the_stream_open(server: ServerThread) -> None:
    client, answers = _stream(server)
    count = 3 * STREAM_WINDOW  # more than one window in flight
    expected = {}
    unary = triton.InferenceServerClient(server.url)
    for i in range(count):
        if i % 10 == 7:  # a wrong shape: this message fails, the next ones do not
            client.async_stream_infer("quickstart", [_x(i, columns=3)], request_id=f"m{i}")
            continue
        client.async_stream_infer("quickstart", [_x(i / 10)], request_id=f"m{i}")
        expected[f"m{i}"] = unary.infer("quickstart", [_x(i / 10)]).as_numpy("prob")
    got = [answers.get(timeout=30) for _ in range(count)]
    client.stop_stream()
    client.close()
    unary.close()
    for i, (result, error) in enumerate(got):
        if i % 10 == 7:
            assert result is None and "tensor 'x'" in error.message() and "needs 4" in error.message()
        else:
            assert error is None and result.get_response().id == f"m{i}"  # in the order sent
            np.testing.assert_array_equal(result.as_numpy("prob"), expected[f"m{i}"])


def test_unknown_graph_is_answered_in_its_message(server: ServerThread) -> None:
    client, answers = _stream(server)
    client.async_stream_infer("absent", [_x(0)], request_id="a")
    client.async_stream_infer("quickstart", [_x(0)], request_id="b")
    (first, error), (second, none) = answers.get(timeout=30), answers.get(timeout=30)
    client.stop_stream()
    client.close()
    assert first is None and "'absent'" in error.message()
    assert none is None and second.get_response().id == "b"


def test_the_stream_deadline_bounds_its_messages(server: ServerThread) -> None:
    client, answers = _stream(server, stream_timeout=0.3)
    client.async_stream_infer("slow", _slow(), request_id="late")
    result, error = answers.get(timeout=30)
    client.stop_stream()
    client.close()
    assert result is None and "deadline" in error.message().lower()
    state = server.server.state
    _wait_for(lambda: state.in_flight == 0 and state.admission.active == 0, "the late message to end")


def test_a_cancelled_stream_frees_its_calls(server: ServerThread) -> None:
    state = server.server.state
    client, _ = _stream(server)
    for i in range(4):
        client.async_stream_infer("slow", _slow(), request_id=f"s{i}")
    _wait_for(lambda: state.in_flight >= 1, "the stream's calls to start")
    client.stop_stream(cancel_requests=True)
    client.close()
    _wait_for(lambda: state.in_flight == 0 and state.admission.active == 0, "the cancelled calls to end")
    # and the server still serves streams
    again, more = _stream(server)
    again.async_stream_infer("quickstart", [_x(1)], request_id="after")
    result, error = more.get(timeout=30)
    again.stop_stream()
    again.close()
    assert error is None and result.get_response().id == "after"
