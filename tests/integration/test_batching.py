"""Dynamic batching through a real server, called with tritonclient.grpc from several threads.

Batches here are dispatched by size (the queue delays are far longer than any test) or by a
request's deadline, so what forms a batch does not depend on how fast the machine is.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as triton
from onnx import TensorProto, helper, numpy_helper
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.integration.test_observability import _scrape
from tests.server_thread import ServerThread
from tests.unit.test_onnx_runtime import linear_model

ROOT = Path(__file__).resolve().parents[2]
MLP = ROOT / "bench" / "models" / "mlp32.onnx"

GRAPH = """\
inputs:
  x: {{datatype: FP32, shape: [-1, {width}]}}
nodes:
  mlp:
    model: mlp32.onnx
    inputs: {{x: inputs.x}}
    {batching}
outputs:
  y: mlp.y
"""
GRAPHS = {
    "plain": ("32", ""),
    "four": ("32", "batching: {max_batch_size: 4, max_queue_delay: 60s}"),
    "eight": ("32", "batching: {max_batch_size: 8, max_queue_delay: 60s}"),
}
ROW_SUMS = """\
inputs:
  x: {datatype: FP32, shape: [-1, -1]}
nodes:
  sums:
    model: row_sums.onnx
    inputs: {x: inputs.x}
    batching: {max_batch_size: 4, max_queue_delay: 60s}
outputs:
  y: sums.y
"""


def _row_sums_model(path: Path) -> None:
    """y = x.sum(axis=1, keepdims=True): FP32 [N, D] -> [N, 1], any width D."""
    axes = numpy_helper.from_array(np.array([1], np.int64), "axes")
    node = helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=1)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "D"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])
    model = helper.make_model(
        helper.make_graph([node], "row_sums", [x], [y], [axes]), opset_imports=[helper.make_opsetid("", 17)]
    )
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())


@pytest.fixture(scope="module")
def graphs(tmp_path_factory: pytest.TempPathFactory, example_graphs: Path) -> Path:
    root = tmp_path_factory.mktemp("batching-graphs")
    for name, (width, batching) in GRAPHS.items():
        (root / name).mkdir()
        (root / name / "graph.yaml").write_text(GRAPH.format(width=width, batching=batching))
        shutil.copy(MLP, root / name / "mlp32.onnx")
    (root / "widths").mkdir()
    (root / "widths" / "graph.yaml").write_text(ROW_SUMS)
    _row_sums_model(root / "widths" / "row_sums.onnx")
    return root


@pytest.fixture(scope="module")
def traced(graphs: Path) -> Iterator[tuple[ServerThread, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    with ServerThread(graphs, span_exporter=exporter, trace_sample_ratio=1.0) as server:
        yield server, exporter


def _x(values: np.ndarray) -> list[triton.InferInput]:
    tensor = triton.InferInput("x", list(values.shape), "FP32")
    tensor.set_data_from_numpy(values.astype(np.float32))
    return [tensor]


def _distinct(i: int, rows: int, width: int = 32) -> np.ndarray:
    return np.random.default_rng(1000 + i).normal(size=(rows, width)).astype(np.float32)


def _together(url: str, calls: list[Callable[[triton.InferenceServerClient], object]]) -> list[object]:
    """Run each call on its own thread and client at once; results (or exceptions) in order."""
    start = threading.Barrier(len(calls))

    def one(call: Callable[[triton.InferenceServerClient], object]) -> object:
        client = triton.InferenceServerClient(url)
        try:
            start.wait(30)
            return call(client)
        except Exception as exc:  # returned, so the test can say which call failed and how
            return exc
        finally:
            client.close()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(one, calls))


def _infer(graph: str, x: np.ndarray, **kwargs: object) -> Callable[[triton.InferenceServerClient], object]:
    return lambda client: client.infer(graph, _x(x), **kwargs).as_numpy("y")


def test_concurrent_requests_get_exactly_their_own_rows(traced) -> None:  # type: ignore[no-untyped-def]
    server, exporter = traced
    exporter.clear()
    inputs = [_distinct(i, rows) for i, rows in enumerate((1, 1, 2, 3, 1, 2, 2, 3, 1))]  # 16 rows = 2 batches
    answers = _together(
        server.url, [_infer("eight", x, client_timeout=4) for x in inputs]
    )  # leftovers: deadline
    client = triton.InferenceServerClient(server.url)
    for x, answer in zip(inputs, answers, strict=True):
        assert isinstance(answer, np.ndarray), answer
        expected = client.infer("plain", _x(x)).as_numpy("y")
        assert answer.shape == expected.shape == (x.shape[0], 1)
        np.testing.assert_allclose(answer, expected, rtol=1e-5, atol=1e-6)
    client.close()


def test_a_request_bigger_than_max_batch_size_runs_in_chunks(traced) -> None:  # type: ignore[no-untyped-def]
    server, _ = traced
    client = triton.InferenceServerClient(server.url)
    x = _distinct(99, 19)
    np.testing.assert_allclose(
        client.infer("eight", _x(x)).as_numpy("y"),
        client.infer("plain", _x(x)).as_numpy("y"),
        rtol=1e-5,
        atol=1e-6,
    )
    client.close()


def test_four_one_row_requests_run_as_one_batch_seen_in_traces_and_metrics(traced) -> None:  # type: ignore[no-untyped-def]
    server, exporter = traced
    before = _scrape(server.server.metrics_port)
    exporter.clear()
    answers = _together(server.url, [_infer("four", _distinct(i, 1)) for i in range(4)])
    assert all(isinstance(a, np.ndarray) for a in answers), answers
    server.server.tracer_provider.force_flush()
    spans = _wait_for_spans(exporter, "four", 4)
    assert [s.attributes["engine.batch_size"] for s in spans] == [4, 4, 4, 4]
    assert all(s.attributes["engine.rows"] == 1 for s in spans)
    after = _scrape(server.server.metrics_port)
    labels = (("graph", "four"), ("kind", "model"), ("node", "mlp"), ("version", "1"))

    def grew(name: str, extra: tuple[tuple[str, str], ...] = ()) -> float:
        key = (name, tuple(sorted(labels + extra)))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert grew("engine_node_batch_size_count") == 1  # one batch, counted once
    assert grew("engine_node_batch_size_sum") == 4
    assert grew("engine_node_batch_size_bucket", (("le", "2"),)) == 0
    assert grew("engine_node_batch_size_bucket", (("le", "4"),)) == 1


def _wait_for_spans(exporter: InMemorySpanExporter, graph: str, count: int) -> list:  # type: ignore[type-arg]
    """The model-node spans of the last ``count`` requests to ``graph``."""
    deadline = time.monotonic() + 10
    while True:  # spans are exported off the request path
        finished = exporter.get_finished_spans()
        requests = {
            s.context.span_id for s in finished if s.name == "inference.GRPCInferenceService/ModelInfer"
        }
        spans = [s for s in finished if s.name == "node mlp" and s.parent and s.parent.span_id in requests]
        if len(spans) >= count or time.monotonic() > deadline:
            return spans[-count:]
        time.sleep(0.05)


def test_no_batch_exceeds_max_batch_size(traced) -> None:  # type: ignore[no-untyped-def]
    server, _ = traced
    inputs = [_distinct(200 + i, 1 + i % 5) for i in range(12)] + [
        _distinct(300, 8)
    ]  # 44 rows: 5 full batches + 4
    calls = [_infer("eight", x, client_timeout=5) for x in inputs]  # the last rows go at their deadline
    answers = _together(server.url, calls)
    assert all(isinstance(a, np.ndarray) for a in answers), answers
    samples = _scrape(server.server.metrics_port)
    labels = (("graph", "eight"), ("kind", "model"), ("node", "mlp"), ("version", "1"))
    total = samples[("engine_node_batch_size_count", labels)]
    assert total > 0
    assert samples[("engine_node_batch_size_bucket", tuple(sorted((*labels, ("le", "8")))))] == total


def test_the_queue_delay_is_bounded_by_the_request_deadline(traced) -> None:  # type: ignore[no-untyped-def]
    server, _ = traced
    client = triton.InferenceServerClient(server.url)
    x = _distinct(7, 1)
    # Alone, this row would wait a minute for three more; the caller has 3 seconds.
    answer = client.infer("four", _x(x), client_timeout=3).as_numpy("y")
    np.testing.assert_allclose(answer, client.infer("plain", _x(x)).as_numpy("y"), rtol=1e-5, atol=1e-6)
    client.close()


def test_a_malformed_request_is_refused_without_touching_a_forming_batch(traced) -> None:  # type: ignore[no-untyped-def]
    server, _ = traced
    good = [_distinct(40 + i, 1) for i in range(4)]
    outcome: dict[str, object] = {}

    def bad_then_complete(client: triton.InferenceServerClient) -> object:
        for bad in (_distinct(50, 1, width=5), _distinct(51, 2)[:, :31]):
            try:
                client.infer("four", _x(bad))
            except triton.InferenceServerException as exc:
                outcome.setdefault("bad", []).append(exc)  # type: ignore[union-attr]
        return client.infer("four", _x(good[3])).as_numpy("y")  # the fourth row completes the batch

    def waiting(i: int) -> Callable[[triton.InferenceServerClient], object]:
        return lambda client: client.infer("four", _x(good[i])).as_numpy("y")

    answers = _together(server.url, [waiting(0), waiting(1), waiting(2), bad_then_complete])
    refused = outcome["bad"]
    assert [e.status() for e in refused] == ["StatusCode.INVALID_ARGUMENT"] * 2  # type: ignore[attr-defined]
    client = triton.InferenceServerClient(server.url)
    for x, answer in zip(good, answers, strict=True):
        assert isinstance(answer, np.ndarray), answer
        np.testing.assert_allclose(answer, client.infer("plain", _x(x)).as_numpy("y"), rtol=1e-5, atol=1e-6)
    client.close()


def test_rows_of_different_widths_never_share_a_batch(traced) -> None:  # type: ignore[no-untyped-def]
    server, _ = traced
    inputs = [_distinct(60 + i, 1, width=3 if i % 2 else 5) for i in range(8)]  # 4 rows of each width
    calls = [lambda c, x=x: c.infer("widths", _x(x), client_timeout=2).as_numpy("y") for x in inputs]
    answers = _together(server.url, calls)  # a width change dispatches a batch early; leftovers: deadline
    for x, answer in zip(inputs, answers, strict=True):
        assert isinstance(answer, np.ndarray), answer
        np.testing.assert_allclose(answer, x.sum(axis=1, keepdims=True), rtol=1e-5, atol=1e-5)


def test_validate_reports_a_model_that_cannot_batch(tmp_path: Path) -> None:
    folder = tmp_path / "fixed"
    folder.mkdir()
    linear_model(folder / "fixed.onnx", dims=(1, 3))
    text = (
        "inputs:\n  x: {datatype: FP32, shape: [1, 3]}\nnodes:\n  lin:\n    model: fixed.onnx\n"
        "    inputs: {x: inputs.x}\n    batching: {max_batch_size: 16}\noutputs:\n  y: lin.y\n"
    )
    (folder / "graph.yaml").write_text(text)
    result = subprocess.run(
        [sys.executable, "-m", "engine.cli", "validate", str(folder / "graph.yaml")],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    col = text.splitlines()[6].index("16") + 1
    assert (
        f"{folder / 'graph.yaml'}:7:{col}: error: model 'fixed.onnx' cannot batch: its input 'x' has a fixed "
        "first dimension of 1" in result.stdout + result.stderr
    ), result.stdout + result.stderr
