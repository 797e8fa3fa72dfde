"""``engine init``: a graph folder scaffolded from ONNX files validates and runs as written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def engine(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def test_a_chain_of_models_is_wired_from_their_signatures(tmp_path: Path, example_graphs: Path) -> None:
    models = example_graphs / "quickstart"
    made = engine("init", "scored", str(models / "scaler.onnx"), str(models / "classifier.onnx"),
                  "--graphs", str(tmp_path))  # fmt: skip
    assert made.returncode == 0, made.stdout + made.stderr
    folder = tmp_path / "scored"
    assert made.stdout.splitlines()[-1].startswith(f"{folder / 'graph.yaml'}: ok")
    graph = yaml.safe_load((folder / "graph.yaml").read_text())
    assert graph["inputs"] == {"x": {"datatype": "FP32", "shape": [-1, 4]}}  # read from scaler.onnx
    assert graph["nodes"]["classifier"] == {"model": "classifier.onnx", "inputs": {"x": "scaler.z"}}
    assert graph["outputs"] == {"prob": "classifier.prob"}
    assert {p.name for p in folder.iterdir()} == {"graph.yaml", "README.md", "scaler.onnx", "classifier.onnx"}
    assert engine("validate", str(folder)).returncode == 0
    ran = engine("graph", "run", str(folder), "--input", "x=[[5.1, 3.5, 1.4, 0.2]]", "--format", "json")
    assert ran.returncode == 0, ran.stderr
    assert len(json.loads(ran.stdout)["prob"]) == 1


def test_models_that_do_not_chain_share_their_inputs_and_serve_every_output(
    tmp_path: Path, example_graphs: Path
) -> None:
    fraud = example_graphs / "fraud"
    made = engine(
        "init", "pair", str(fraud / "ip_risk.onnx"), str(fraud / "deep.onnx"), "--graphs", str(tmp_path)
    )
    assert made.returncode == 0, made.stdout + made.stderr
    graph = yaml.safe_load((tmp_path / "pair" / "graph.yaml").read_text())
    assert list(graph["inputs"]) == ["x"]  # deep's x [-1, 7] cannot read ip_risk's prob [-1, 1]
    assert graph["nodes"]["deep"]["inputs"] == {"x": "inputs.x"}
    assert graph["outputs"] == {"prob": "ip_risk.prob", "deep_prob": "deep.prob"}


def test_init_refuses_what_it_cannot_do(tmp_path: Path, example_graphs: Path) -> None:
    model = str(example_graphs / "fraud" / "ip_risk.onnx")
    assert engine("init", "one", model, "--graphs", str(tmp_path)).returncode == 0
    again = engine("init", "one", model, "--graphs", str(tmp_path))
    assert (again.returncode, again.stderr.strip()) == (
        2, f"engine init: {tmp_path / 'one'} already exists (use --force to write into it)"
    )  # fmt: skip
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    junk = engine("init", "two", str(tmp_path / "junk.onnx"), "--graphs", str(tmp_path))
    # onnxruntime's own text is logged (under an error id) before it; the message is ours
    said = junk.stderr.strip().splitlines()[-1]
    assert junk.returncode == 1 and said.startswith(f"engine init: {tmp_path / 'junk.onnx'}: ")
    assert "not an ONNX file" in said and "ONNXRuntimeError" not in said
    assert not (tmp_path / "two").exists()
