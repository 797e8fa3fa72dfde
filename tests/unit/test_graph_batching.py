"""``batching:`` on model nodes: what the reader accepts, and every diagnostic with its line."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from engine.execution import PlanRunner
from engine.graph import load_graph
from engine.graph.reading.batching_reader import batch_dimension_problem
from engine.interfaces import BatchingOptions, ModelOptions, ModelSignature
from engine.runtimes.batching import BatchingRuntime
from tests.fakes import FakeModel, FakeRuntimeFactory, RecordingObserver, spec
from tests.unit.graph_cases import diagnose, line_of, load, only_error, write_graph

GRAPH = """\
inputs:
  x: {datatype: FP32, shape: [-1, 7]}
nodes:
  risk:
    model: ip_risk.onnx
    inputs: {x: inputs.x}
    batching: {max_batch_size: 64, max_queue_delay: 2ms, preferred_batch_sizes: [32, 16]}
outputs:
  score: risk.y
"""


def models(shape: tuple[int, ...] = (-1, 7)) -> dict[str, FakeModel | Exception]:
    sig = ModelSignature(inputs=(spec("x", shape=shape),), outputs=(spec("y", shape=(shape[0], 1)),))
    return {"ip_risk.onnx": FakeModel(signature=sig, fn=lambda x: (x[:, :1],))}


def test_batching_is_read_into_the_model_node(tmp_path: Path) -> None:
    graph = load(tmp_path, GRAPH, models())
    batching = graph.spec.node("risk").batching  # type: ignore[union-attr]
    assert batching is not None
    assert (batching.max_batch_size, batching.max_queue_delay_s) == (64, 0.002)
    assert batching.preferred_batch_sizes == (16, 32)


@pytest.mark.parametrize(
    ("written", "delay_s"), [("0", 0.0), ("1.5", 1.5), ('"500us"', None), ("250ms", 0.25), ("1m", 60.0)]
)
def test_max_queue_delay_is_written_like_timeout(tmp_path: Path, written: str, delay_s: float | None) -> None:
    text = GRAPH.replace("max_queue_delay: 2ms", f"max_queue_delay: {written}")
    if delay_s is None:
        error = only_error(diagnose(tmp_path, text, models()))
        assert "'max_queue_delay' must be a duration such as \"20ms\"" in error.message
        return
    batching = load(tmp_path, text, models()).spec.node("risk").batching  # type: ignore[union-attr]
    assert batching is not None and batching.max_queue_delay_s == pytest.approx(delay_s)


def test_defaults_are_a_2ms_delay_and_no_preferred_sizes(tmp_path: Path) -> None:
    text = GRAPH.replace(", max_queue_delay: 2ms, preferred_batch_sizes: [32, 16]", "")
    batching = load(tmp_path, text, models()).spec.node("risk").batching  # type: ignore[union-attr]
    assert batching is not None
    assert (batching.max_queue_delay_s, batching.preferred_batch_sizes) == (0.002, ())


# (replace this, with this, message fragment, the text on the line reported)
CASES = [
    (
        "max_queue_delay: 2ms",
        "max_queue_dealy: 2ms",
        "unknown key 'max_queue_dealy' in 'batching'; did you mean 'max_queue_delay'?",
        "max_queue_dealy",
    ),
    ("max_batch_size: 64", "max_batch_size: 0", "'max_batch_size' must be a whole number from 1", "batching"),
    ("max_batch_size: 64", "max_batch_size: big", "got 'big'", "batching"),
    ("max_batch_size: 64, ", "", "'batching' needs 'max_batch_size'", "batching"),
    (
        "preferred_batch_sizes: [32, 16]",
        "preferred_batch_sizes: [32, 128]",
        "a preferred batch size must be a whole number from 1 to max_batch_size (64), got 128",
        "batching",
    ),
    (
        "preferred_batch_sizes: [32, 16]",
        "preferred_batch_sizes: 16",
        "must be a list of row counts",
        "batching",
    ),
    (
        "    batching: {max_batch_size: 64, max_queue_delay: 2ms, preferred_batch_sizes: [32, 16]}",
        "    batching: 64",
        "'batching' must be a mapping",
        "batching",
    ),
    (
        "    batching:",
        "    batchng:",
        "unknown key 'batchng' in model node 'risk'; did you mean 'batching'?",
        "batchng",
    ),
]


@pytest.mark.parametrize(("old", "new", "message", "where"), CASES)
def test_batching_diagnostics(tmp_path: Path, old: str, new: str, message: str, where: str) -> None:
    assert old in GRAPH
    text = GRAPH.replace(old, new, 1)
    error = only_error(diagnose(tmp_path, text, models()))
    assert message in error.message, error.message
    assert error.line == line_of(text, where)


def test_a_model_with_a_fixed_batch_dimension_cannot_batch(tmp_path: Path) -> None:
    error = only_error(diagnose(tmp_path, GRAPH.replace("[-1, 7]", "[1, 7]"), models(shape=(1, 7))))
    assert error.message == (
        "model 'ip_risk.onnx' cannot batch: its input 'x' has a fixed first dimension of 1; remove "
        "'batching' or export the model with a dynamic (-1) batch dimension"
    )
    line = line_of(GRAPH, "batching")
    assert (error.line, error.col) == (line, GRAPH.splitlines()[line - 1].index("64") + 1)


def test_nodes_sharing_a_file_must_batch_alike(tmp_path: Path) -> None:
    text = GRAPH.replace(
        "outputs:\n  score: risk.y",
        "  again: {model: ip_risk.onnx, inputs: {x: inputs.x}}\noutputs:\n  score: risk.y\n  again: again.y",
    )
    error = only_error(diagnose(tmp_path, text, models()))
    assert "is also used by node 'risk' with other threads/execution/batching" in error.message
    assert "batching 64 rows, 2 ms, preferred [16, 32] vs 1/auto/no batching" in error.message


def test_batch_dimension_problems() -> None:
    good = ModelSignature(inputs=(spec("x", shape=(-1, 3)),), outputs=(spec("y", shape=(-1,)),))
    assert batch_dimension_problem(good) is None
    scalar_out = ModelSignature(inputs=(spec("x", shape=(-1, 3)),), outputs=(spec("y", shape=()),))
    assert batch_dimension_problem(scalar_out) == "its output 'y' is a scalar, with no batch dimension"
    fixed_out = ModelSignature(inputs=(spec("x", shape=(-1, 3)),), outputs=(spec("y", shape=(4, 1)),))
    assert batch_dimension_problem(fixed_out) == "its output 'y' has a fixed first dimension of 4"


@dataclass
class BatchingFakes(FakeRuntimeFactory):
    """FakeRuntimeFactory that batches as OnnxRuntimeFactory does when a node asks for it."""

    options: list[ModelOptions] = field(default_factory=list)

    def load(self, path: Path, options: ModelOptions) -> FakeModel | BatchingRuntime:  # type: ignore[override]
        self.options.append(options)
        model = super().load(path, options)
        return model if options.batching is None else BatchingRuntime(model, options.batching)


async def test_the_executor_hands_the_deadline_in_and_records_each_batch(tmp_path: Path) -> None:
    fakes = models()
    factory = BatchingFakes(fakes)
    text = GRAPH.replace(
        "max_batch_size: 64, max_queue_delay: 2ms, preferred_batch_sizes: [32, 16]",
        "max_batch_size: 2, max_queue_delay: 1m",
    )
    graph = load_graph(write_graph(tmp_path, text, fakes), factory)
    assert factory.options[0].batching == BatchingOptions(2, 60.0, ())
    runner = PlanRunner(graph.plan)
    x = np.arange(14, dtype=np.float32).reshape(2, 7)
    async with asyncio.timeout(30):
        await runner.run([x[:1]])  # the warm-up runs alone
        observers = [RecordingObserver(), RecordingObserver()]
        results = await asyncio.gather(
            *(runner.run([x[i : i + 1]], observer=observers[i]) for i in range(2))
        )  # two one-row requests: one run of 2 rows
        (alone,) = await runner.run([x[1:]], deadline=time.monotonic() + 1.0)  # a minute's delay, 1 s left
    for i, (out,) in enumerate(results):
        np.testing.assert_array_equal(out, x[i : i + 1, :1])
    np.testing.assert_array_equal(alone, x[1:, :1])
    assert [o.events[0].batch_size for o in observers] == [2, 2]
    assert [o.events[0].rows for o in observers] == [1, 1]
    stats = runner.stats.nodes["risk"]
    assert stats.batch_rows == 1 + 2 + 1 and stats.batch_sizes is not None and sum(stats.batch_sizes) == 3
