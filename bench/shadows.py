"""The shadow part of `make bench`: what a shadow costs the live path.

The fraud example (its ``deep_v2`` shadow mirrors ``deep``; the bench request takes the
``deep`` branch, so every request starts a shadow run) is measured against copies of it:

- ``engine-fraud-noshadow``: the same graph without the shadow node (the baseline);
- ``engine-fraud-slowshadow``: the candidate replaced by a model ~100x slower than ``deep``
  (a chain of MatMuls), timeout 50 ms: the shadow pool is saturated and sheds;
- ``engine-fraud-badshadow``: a candidate that raises on every request.

``bench.run`` adds these scenarios and prints, per concurrency, the live p50/p99 of each next to
the no-shadow baseline (ratios), which is the "measured small bound" a shadow may add.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]
FRAUD = ROOT / "graphs" / "fraud"
VARIANTS = ("fraud_noshadow", "fraud_slowshadow", "fraud_badshadow")


def _save(graph: onnx.GraphProto, path: Path) -> None:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def slow_candidate(path: Path, depth: int = 400, width: int = 256) -> None:
    """x FP32 [N, 7] -> prob FP32 [N, 1]: ``depth`` chained 256x256 MatMuls, then a mean (~5 ms)."""
    names = ["h0"] + [f"h{i + 1}" for i in range(depth)]
    nodes = [helper.make_node("MatMul", ["x", "W0"], ["h0"])]
    nodes += [helper.make_node("MatMul", [names[i], "W"], [names[i + 1]]) for i in range(depth)]
    nodes.append(helper.make_node("ReduceMean", [names[-1]], ["m"], axes=[1], keepdims=1))
    nodes.append(helper.make_node("Sigmoid", ["m"], ["prob"]))
    graph = helper.make_graph(
        nodes,
        "slow_candidate",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 7])],
        [helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["N", 1])],
        [
            numpy_helper.from_array(np.full((7, width), 1.0 / 7, np.float32), "W0"),
            numpy_helper.from_array(np.full((width, width), 1.0 / width, np.float32), "W"),
        ],
    )
    _save(graph, path)


def failing_candidate(path: Path) -> None:
    """x FP32 [N, 7] -> prob [N, 1]: gathers row int(x[:, 0] * 1000) of a 2-row table, which fails
    at run time for any real log-amount (fine for the all-zeros warm-up)."""
    nodes = [
        helper.make_node("Slice", ["x", "zero", "one", "one"], ["first"]),
        helper.make_node("Mul", ["first", "k"], ["scaled"]),
        helper.make_node("Cast", ["scaled"], ["index"], to=TensorProto.INT64),
        helper.make_node("Gather", ["table", "index"], ["g"], axis=0),
        helper.make_node("Squeeze", ["g", "one"], ["prob"]),
    ]
    graph = helper.make_graph(
        nodes,
        "failing_candidate",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 7])],
        [helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["N", 1])],
        [
            numpy_helper.from_array(np.zeros((2, 1), np.float32), "table"),
            numpy_helper.from_array(np.int64([0]), "zero"),
            numpy_helper.from_array(np.int64([1]), "one"),
            numpy_helper.from_array(np.float32([1000.0]), "k"),
        ],
    )
    _save(graph, path)


def add_graphs(folder: Path) -> None:
    """The three fraud variants under ``folder`` (beside a copy of graphs/fraud)."""
    text = (FRAUD / "graph.yaml").read_text()
    start = text.index("  deep_v2:\n")
    end = text.index("  score:\n")
    without = text[:start] + text[end:]
    for name in VARIANTS:
        shutil.copytree(FRAUD, folder / name, ignore=shutil.ignore_patterns("deep_v2.onnx"))
        body = without if name == "fraud_noshadow" else text
        (folder / name / "graph.yaml").write_text(body.replace("graph: fraud\n", f"graph: {name}\n"))
    slow_candidate(folder / "fraud_slowshadow" / "deep_v2.onnx")
    failing_candidate(folder / "fraud_badshadow" / "deep_v2.onnx")


def scenarios(scenario: Any, engine: list[str], request: Any, fraud: dict[str, np.ndarray]) -> list[Any]:
    """``bench.run.Scenario`` objects for the variants (built by the caller's constructor)."""
    return [
        scenario(
            "engine-fraud-noshadow", engine, request("fraud_noshadow", fraud), "fraud without its shadow"
        ),
        scenario(
            "engine-fraud-slowshadow",
            engine,
            request("fraud_slowshadow", fraud),
            "fraud, shadow candidate ~100x slower than deep (shed, timeouts)",
        ),
        scenario(
            "engine-fraud-badshadow",
            engine,
            request("fraud_badshadow", fraud),
            "fraud, shadow candidate that raises",
        ),
    ]


def report_lines(rows: list[dict[str, Any]]) -> list[str]:
    """Live p50/p99 with each shadow variant against the fraud graph without a shadow."""
    by = {(r["scenario"], r["concurrency"]): r for r in rows if r.get("rps")}
    lines: list[str] = []
    for c in sorted({r["concurrency"] for r in rows}):
        base = by.get(("engine-fraud-noshadow", c))
        if base is None:
            continue
        lines.append(f"shadow cost on the live path, concurrency {c} (vs fraud without its shadow):")
        for name, label in (
            ("engine-fraud", "deep_v2 shadow (the example)"),
            ("engine-fraud-slowshadow", "a 100x slower candidate"),
            ("engine-fraud-badshadow", "a candidate that raises"),
        ):
            row = by.get((name, c))
            if row is None:
                continue
            lines.append(
                f"  {label:<30} p50 {row['p50_ms']:.3f} ms ({row['p50_ms'] / base['p50_ms']:.2f}x)  "
                f"p99 {row['p99_ms']:.3f} ms ({row['p99_ms'] / base['p99_ms']:.2f}x)  "
                f"{row['rps']:,.0f} infer/s ({row['rps'] / base['rps']:.2f}x)"
            )
    return lines
