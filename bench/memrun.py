"""The `make memrun` workload for bench/soak.py: the one-model graph with dynamic batching.

`make memrun` runs the soak (5 minutes, 70% of capacity, reloads every SOAK_RELOAD_S seconds,
every request logged) against this graph instead of the fraud example, with requests of 1, 2,
8, 32 and 100 rows, so batches of every size form, split and (at 100 rows, over
max_batch_size) run in chunks, while the soak checks that resident memory does not grow.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from bench import batching

GRAPH = "mlp"
ROWS = (1, 2, 8, 32, 100)
LOGGING = "logging: {sample: 1.0, always_on: [error], nodes: true, max_tensor_elements: 64}\n"


def setup(graphs: Path) -> Path:
    """Write the batched graph into ``graphs``; returns its graph.yaml (the one the soak reloads)."""
    folder = graphs / GRAPH
    folder.mkdir(parents=True)
    shutil.copy(batching.MLP, folder / "mlp32.onnx")
    path = folder / "graph.yaml"
    path.write_text(batching.BATCHED + LOGGING)
    return path


def requests_file(folder: Path) -> Path:
    """Requests of varied batch sizes, in loadtest's JSON Lines request format."""
    rng = np.random.default_rng(11)
    path = folder / "requests.jsonl"
    with path.open("w") as out:
        for i in range(64):
            rows = ROWS[i % len(ROWS)]
            x = rng.normal(size=(rows, 32)).round(4)
            out.write(
                json.dumps({"inputs": {"x": {"datatype": "FP32", "shape": [rows, 32], "data": x.tolist()}}})
            )
            out.write("\n")
    return path


def capacity_inputs() -> dict[str, np.ndarray]:
    """A 32-row request: the soak's capacity probe (the mix above averages about 29 rows)."""
    return {"x": np.random.default_rng(3).normal(size=(32, 32))}
