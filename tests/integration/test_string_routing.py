"""Routing on text: a switch on a BYTES input and an expression on a BYTES feature, served.

The graph routes EU/UK rows to one branch as KServe's Switch example routes on a string, and
marks gold-tier users from a feature source; a real server answers tritonclient.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.grpc as triton

from tests.server_thread import ServerThread

GRAPH = """\
inputs:
  region: {datatype: BYTES, shape: [-1, 1]}
  user_id: {datatype: BYTES, shape: [-1, 1]}
  amount: {datatype: FP32, shape: [-1, 1]}
nodes:
  user:
    features: users
    key: inputs.user_id
    fields: {tier: {datatype: BYTES, default: "none"}}
    timeout: 1s
  by_region:
    switch:
      - when: 'inputs.region in ["eu", "uk"]'
        to: europe
      - when: inputs.region == 'us'
        to: america
      - default: elsewhere
  europe: {transform: expr, expr: "inputs.amount * 2"}
  america: {transform: expr, expr: "inputs.amount * 3"}
  elsewhere: {transform: expr, expr: "inputs.amount * 0 - 1"}
  gold: {transform: expr, expr: "where(user.tier == 'gold', 1, 0) + inputs.amount * 0"}
outputs:
  routed: by_region
  gold: gold
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    root = tmp_path_factory.mktemp("strings") / "graphs"
    (root / "regions").mkdir(parents=True)
    (root / "regions" / "graph.yaml").write_text(GRAPH)
    (root / "users.csv").write_text("user_id,tier\nu1,gold\nu2,silver\n")
    sources = {
        "users": {"type": "static", "path": str(root / "users.csv"), "key_column": "user_id"},
    }
    with ServerThread(root, feature_sources=sources) as running:
        yield running


def _text(values: list[str]) -> np.ndarray:
    return np.array([[v.encode()] for v in values], dtype=object)


def test_a_switch_routes_rows_by_a_text_input(served: ServerThread) -> None:
    regions = ["eu", "us", "uk", "br", "EU", ""]
    users = ["u1", "u2", "u3", "u1", "u2", "u1"]
    amount = np.arange(1, len(regions) + 1, dtype=np.float32).reshape(-1, 1)
    client = triton.InferenceServerClient(served.url)
    try:
        tensors = []
        for name, array, datatype in (
            ("region", _text(regions), "BYTES"),
            ("user_id", _text(users), "BYTES"),
            ("amount", amount, "FP32"),
        ):
            tensor = triton.InferInput(name, list(array.shape), datatype)
            tensor.set_data_from_numpy(array)
            tensors.append(tensor)
        answer = client.infer("regions", tensors)
    finally:
        client.close()
    factor = {"eu": 2.0, "uk": 2.0, "us": 3.0}  # matching is exact: "EU" and "" go elsewhere
    expected = [amount[i, 0] * factor[r] if r in factor else -1.0 for i, r in enumerate(regions)]
    routed = answer.as_numpy("routed")
    assert routed is not None and routed.ravel().tolist() == expected
    gold = answer.as_numpy("gold")
    assert gold is not None
    assert gold.ravel().tolist() == [1.0 if u == "u1" else 0.0 for u in users]
