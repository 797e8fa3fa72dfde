"""Models that misbehave against a live server: callers get our words and the right status,
never onnxruntime's text; the server log keeps the original under the error id."""

from __future__ import annotations

import logging
import re
import tracemalloc
from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.grpc as triton

from tests.integration.hostile_models import (
    allocating_model,
    first_row_model,
    future_opset_model,
    heavy_model,
    one_model_graph,
)
from tests.server_thread import ServerThread

RUNTIME_TEXT = re.compile(r"::|/onnxruntime|\.cc:|\.h:|ONNXRuntimeError|Status Message|/tmp/|/work/")


MAX_MODEL_BYTES = 40_000_000
HEAVY_MB = 24


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    root = tmp_path_factory.mktemp("graphs")
    (root / "alloc").mkdir()
    allocating_model(root / "alloc" / "alloc.onnx")
    one_model_graph(root / "alloc", "alloc.onnx", "s: {datatype: INT64, shape: [2]}", "y", node="grow")
    (root / "rows").mkdir()
    first_row_model(root / "rows" / "rows.onnx")
    one_model_graph(root / "rows", "rows.onnx", "x: {datatype: FP32, shape: [-1, 1]}", "y", node="shrink")
    (root / "future").mkdir()
    future_opset_model(root / "future" / "future.onnx")
    one_model_graph(root / "future", "future.onnx", "x: {datatype: FP32, shape: [-1, 1]}", "y")
    (root / "huge").mkdir()
    with (root / "huge" / "huge.onnx").open("wb") as sparse:  # 50 MB on paper, no blocks on disk
        sparse.truncate(50_000_000)
    one_model_graph(root / "huge", "huge.onnx", "x: {datatype: FP32, shape: [-1, 1]}", "y")
    (root / "heavy").mkdir()
    one_model_graph(root / "heavy", "heavy.onnx", "x: {datatype: FP32, shape: [-1, 1]}", "y")
    heavy_model(root / "heavy" / "heavy.onnx", 1)
    with ServerThread(root, max_model_bytes=MAX_MODEL_BYTES) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: ServerThread) -> Iterator[triton.InferenceServerClient]:
    c = triton.InferenceServerClient(server.url)
    yield c
    c.close()


def _infer(client: triton.InferenceServerClient, graph: str, name: str, array: np.ndarray) -> np.ndarray:
    tensor = triton.InferInput(name, list(array.shape), "INT64" if array.dtype == np.int64 else "FP32")
    tensor.set_data_from_numpy(array)
    return client.infer(graph, [tensor]).as_numpy("y")


def test_an_allocation_the_request_asks_for_is_resource_exhausted_naming_the_node(
    client: triton.InferenceServerClient, caplog: pytest.LogCaptureFixture
) -> None:
    assert _infer(client, "alloc", "s", np.int64([2, 3])).shape == (2, 3)
    with (
        caplog.at_level(logging.ERROR, logger="engine.errors"),
        pytest.raises(triton.InferenceServerException) as info,
    ):
        _infer(client, "alloc", "s", np.int64([1 << 20, 1 << 20]))  # 4 TiB of floats
    message = info.value.message()
    assert info.value.status() == "StatusCode.RESOURCE_EXHAUSTED", message
    assert "node 'grow'" in message and "memory" in message
    assert not RUNTIME_TEXT.search(message), message
    error_id = re.search(r"error id ([0-9a-f]{12})", message)
    assert error_id is not None
    logged = [r.getMessage() for r in caplog.records if error_id.group(1) in r.getMessage()]
    assert logged and "Failed to allocate" in logged[0]  # the original, for the operator only
    assert _infer(client, "alloc", "s", np.int64([1, 1])).shape == (1, 1)  # and it still serves


def test_an_overflowing_size_is_invalid_argument_in_our_words(client: triton.InferenceServerClient) -> None:
    with pytest.raises(triton.InferenceServerException) as info:
        _infer(client, "alloc", "s", np.int64([-1, 5]))
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "node 'grow'" in info.value.message() and not RUNTIME_TEXT.search(info.value.message())


def test_a_model_returning_fewer_rows_than_declared_is_internal_naming_the_node(
    client: triton.InferenceServerClient,
) -> None:
    assert _infer(client, "rows", "x", np.ones((1, 1), np.float32)).shape == (1, 1)
    with pytest.raises(triton.InferenceServerException) as info:
        _infer(client, "rows", "x", np.ones((4, 1), np.float32))
    assert info.value.status() == "StatusCode.INTERNAL"
    assert "node 'shrink'" in info.value.message()


def test_a_load_error_is_a_diagnostic_in_our_words(client: triton.InferenceServerClient) -> None:
    index = {m["name"]: m for m in client.get_model_repository_index(as_json=True)["models"]}
    reason = index["future"]["reason"]
    assert index["future"]["state"] == "FAILED"
    assert "future.onnx" in reason and "operator set 99" in reason and "error id" in reason
    assert not RUNTIME_TEXT.search(reason.split("graph.yaml")[-1]), reason


def test_a_model_over_the_size_cap_is_refused_unread_and_named(
    server: ServerThread, client: triton.InferenceServerClient
) -> None:
    with pytest.raises(triton.InferenceServerException) as info:  # read, it would be "not an ONNX file"
        client.load_model("huge")
    assert info.value.status() == "StatusCode.FAILED_PRECONDITION"
    assert "huge.onnx" in info.value.message() and "50,000,000 bytes" in info.value.message()
    assert "max_model_bytes" in info.value.message() and "not an ONNX" not in info.value.message()
    assert client.is_model_ready("rows")


def test_a_large_model_is_never_held_in_python_memory_while_it_loads(
    server: ServerThread, client: triton.InferenceServerClient
) -> None:
    """The file is hashed in chunks and onnxruntime reads it from its path: no copy of its bytes
    in Python (a copy is memory twice over and a GIL-held memcpy that stalls the event loop)."""
    path = heavy_model(server.settings.graphs / "heavy" / "heavy.onnx", HEAVY_MB)
    size = path.stat().st_size
    tracemalloc.start()
    try:
        client.load_model("heavy")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert client.is_model_ready("heavy")
    assert peak < size / 4, f"Python allocated {peak:,} bytes at peak loading a {size:,}-byte model"
