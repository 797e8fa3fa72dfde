"""A graph whose calls can be held in flight for as long as a test needs, on any machine.

``held`` fetches one feature (from Redis, through a ``StallingProxy``) before its model
runs. While the proxy is stalled every call waits in that fetch (the node's timeout and the
source's socket timeout are a minute); ``resume()`` lets them all finish. No timing involved.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.grpc as triton
import yaml

from tests.integration.slow_model import WIDTH, slow_model

HELD_GRAPH = """\
graph: {name}
version: {version}
inputs:
  x: {{datatype: FP32, shape: [-1, {width}]}}
  k: {{datatype: BYTES, shape: [-1, 1]}}
nodes:
  f:
    features: held
    key: inputs.k
    fields:
      v: {{datatype: FP32, default: 0}}
    timeout: 60s
  shifted: {{transform: expr, expr: "inputs.x + f.v"}}
  crunch: {{model: slow.onnx, inputs: {{x: shifted}}, execution: pool}}
outputs:
  y: crunch.y
"""


def held_graph(folder: Path, *, version: int = 1, scale: float = 1.0) -> Path:
    """Write graph ``folder.name``: y = ``scale`` for every row of ones (the feature is absent: 0)."""
    folder.mkdir(parents=True, exist_ok=True)
    slow_model(folder / "slow.onnx", depth=4, scale=scale)
    (folder / "graph.yaml").write_text(HELD_GRAPH.format(name=folder.name, version=version, width=WIDTH))
    return folder


def held_source(redis_port: int) -> dict[str, Any]:
    """The ``held`` feature source (for ``feature_sources:``), through the proxy on ``redis_port``."""
    return {
        "type": "redis",
        "url": f"redis://127.0.0.1:{redis_port}/0",
        "key_template": "test:held:absent:{key}",  # no such keys: every value is the default
        "socket_timeout": "60s",
    }


def held_repository(
    root: Path, redis_port: int, *, name: str = "held", quickstart: Path | None = None
) -> Path:
    """A graph folder ``root`` holding the held graph as ``name`` (and a copy of ``quickstart``
    when given), with the ``held`` source in its ``engine.yaml``; returns the graph's folder."""
    if quickstart is not None:
        shutil.copytree(quickstart, root / "quickstart")
    folder = held_graph(root / name)
    (root / "engine.yaml").write_text(yaml.safe_dump({"feature_sources": {"held": held_source(redis_port)}}))
    return folder


def held_inputs(rows: int = 2) -> list[triton.InferInput]:
    x = triton.InferInput("x", [rows, WIDTH], "FP32")
    x.set_data_from_numpy(np.ones((rows, WIDTH), dtype=np.float32))
    k = triton.InferInput("k", [rows, 1], "BYTES")
    k.set_data_from_numpy(np.array([[f"k{i}".encode()] for i in range(rows)], dtype=np.object_))
    return [x, k]
