"""A request with zero rows is answered, with zero-row outputs, through every node kind.

One graph holds each kind (features, every transform op and combine, switch, keyed and random
split, a shadow, recovery by default and by fallback, an optional node), served by a real
server with the quickstart's real ONNX models and called with tritonclient, as a client
sending an empty batch (a filter that matched nothing) would.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as triton

from tests.server_thread import ServerThread

GRAPH = """\
inputs:
  x: {datatype: FP32, shape: [-1, 4]}
  user_id: {datatype: BYTES, shape: [-1, 1]}
  n: {datatype: INT64, shape: [-1, 1]}
nodes:
  user:
    features: users
    key: inputs.user_id
    fields: {age: {datatype: FP32, default: 0}}
    timeout: 1s
    on_error: default
  joined: {transform: concat, inputs: [inputs.x, user.age], axis: -1}
  head: {transform: slice, inputs: joined, start: 0, stop: 4}
  as_int: {transform: cast, inputs: head, to: INT64}
  grid: {transform: reshape, inputs: head, shape: [-1, 2, 2]}
  best: {transform: argmax, inputs: head}
  big: {transform: threshold, inputs: head, value: 1}
  same: {transform: identity, inputs: head}
  scaled: {transform: expr, expr: "where(inputs.n > 2, head * 2, head)"}
  embed: {model: scaler.onnx, inputs: {x: scaled}, on_error: {fallback: embed_backup}}
  embed_backup: {model: scaler.onnx, inputs: {x: head}}
  route:
    switch:
      - when: "inputs.n > 2"
        to: a
      - default: b
  a: {model: classifier.onnx, inputs: {x: embed.z}}
  b: {model: classifier.onnx, inputs: {x: embed.z}, on_error: {default: 0.5}}
  keyed:
    split: [{to: k1, weight: 1}, {to: k2, weight: 1}]
    key: inputs.user_id
  k1: {model: classifier.onnx, inputs: {x: embed.z}}
  k2: {model: classifier.onnx, inputs: {x: embed.z}}
  coin:
    split: [{to: c1, weight: 1}, {to: c2, weight: 1}]
  c1: {model: classifier.onnx, inputs: {x: embed.z}}
  c2: {model: classifier.onnx, inputs: {x: embed.z}}
  lookup: {model: classifier.onnx, inputs: {x: embed.z}, optional: true}
  candidate: {shadow: a, model: candidate.onnx}
  mean: {combine: mean, inputs: [route.prob, keyed.prob]}
  weighted: {combine: weighted_mean, inputs: [route.prob, coin.prob], weights: [3, 1]}
  high: {combine: max, inputs: [route.prob, coin.prob]}
  low: {combine: min, inputs: [route.prob, coin.prob]}
  total: {combine: sum, inputs: [route.prob, coin.prob]}
  votes: {combine: vote, inputs: [as_int, as_int, as_int]}
  both: {combine: concat, inputs: [route.prob, coin.prob]}
outputs:
  mean: mean
  weighted: weighted
  high: high
  low: low
  total: total
  votes: votes
  both: both
  grid: grid
  best: best
  big: big
  same: same
  lookup: lookup.prob
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, example_graphs: Path) -> Iterator[ServerThread]:
    root = tmp_path_factory.mktemp("zero") / "graphs"
    folder = root / "every_kind"
    folder.mkdir(parents=True)
    for model in ("scaler.onnx", "classifier.onnx"):
        shutil.copy(example_graphs / "quickstart" / model, folder / model)
    shutil.copy(example_graphs / "quickstart" / "classifier.onnx", folder / "candidate.onnx")
    (folder / "graph.yaml").write_text(GRAPH)
    (root / "users.csv").write_text("user_id,age\nu1,3\n")
    sources = {"users": {"type": "static", "path": str(root / "users.csv"), "key_column": "user_id"}}
    with ServerThread(root, feature_sources=sources) as running:
        yield running


def _call(served: ServerThread, rows: int) -> triton.InferResult:
    client = triton.InferenceServerClient(served.url)
    try:
        x = triton.InferInput("x", [rows, 4], "FP32")
        x.set_data_from_numpy(np.ones((rows, 4), np.float32))
        user = triton.InferInput("user_id", [rows, 1], "BYTES")
        user.set_data_from_numpy(np.array([[b"u1"]] * rows, dtype=object).reshape(rows, 1))
        n = triton.InferInput("n", [rows, 1], "INT64")
        n.set_data_from_numpy(np.arange(rows, dtype=np.int64).reshape(rows, 1))
        return client.infer("every_kind", [x, user, n])
    finally:
        client.close()


def test_zero_rows_pass_through_every_node_kind(served: ServerThread) -> None:
    full = _call(served, 5)  # the same graph with rows, for the shapes beyond the batch
    empty = _call(served, 0)
    outputs = [o["name"] for o in empty.get_response(as_json=True)["outputs"]]
    assert sorted(outputs) == sorted(o["name"] for o in full.get_response(as_json=True)["outputs"])
    for name in outputs:
        got, reference = empty.as_numpy(name), full.as_numpy(name)
        assert got is not None and reference is not None
        assert got.shape == (0, *reference.shape[1:]), name
        assert got.dtype == reference.dtype, name
