"""The example models built by graphs/build_models.py: reproducible, named as declared, and useful."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import onnx
import pytest
import yaml
from onnx import numpy_helper
from sklearn.metrics import roc_auc_score

from engine.interfaces import ModelOptions
from engine.runtimes.onnx import OnnxModel, OnnxRuntimeFactory
from engine.tensors import DataType

REPO = Path(__file__).resolve().parents[2]
HELD_OUT_SEED = 2024  # the models were trained on seeds 7 and 11


def _load_build_models() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_models", REPO / "graphs" / "build_models.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


bm = _load_build_models()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    bm.build_all(root, log=lambda _: None)
    return root


@pytest.fixture(scope="module")
def models(built: Path) -> Iterator[dict[str, OnnxModel]]:
    factory = OnnxRuntimeFactory()
    loaded = {p.stem: factory.load(p, ModelOptions()) for p in sorted(built.rglob("*.onnx"))}
    yield loaded
    factory.close()


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*.onnx"))
    }


def test_building_twice_gives_identical_files(built: Path, tmp_path: Path) -> None:
    bm.build_all(tmp_path, log=lambda _: None)
    first, second = _digests(built), _digests(tmp_path)
    assert len(first) == 9
    assert first == second


def test_only_missing_files_are_built_unless_forced(tmp_path: Path) -> None:
    quickstart = [g for g in bm.GROUPS if g.folder == "graphs/quickstart"]

    def build(force: bool = False) -> list[str]:
        return [p.name for p in bm.build_all(tmp_path, force=force, groups=quickstart, log=lambda _: None)]

    assert build() == ["scaler.onnx", "classifier.onnx"]
    assert build() == []
    (tmp_path / "graphs/quickstart/classifier.onnx").unlink()
    assert build() == ["classifier.onnx"]
    assert build(force=True) == ["scaler.onnx", "classifier.onnx"]


@pytest.mark.parametrize(
    ("name", "inputs", "outputs"),
    [
        ("scaler", {"x": (-1, 4)}, {"z": (-1, 2)}),
        ("classifier", {"x": (-1, 2)}, {"prob": (-1, 1)}),
        ("ip_risk", {"x": (-1, 7)}, {"prob": (-1, 1)}),
        ("light", {"x": (-1, 7)}, {"prob": (-1, 1)}),
        ("deep", {"x": (-1, 7)}, {"prob": (-1, 1)}),
        ("deep_v2", {"x": (-1, 7)}, {"prob": (-1, 1)}),
        ("eta", {"x": (-1, 5)}, {"minutes": (-1, 1)}),
        ("mlp32", {"x": (-1, 32)}, {"y": (-1, 1)}),
    ],
)
def test_signatures_are_as_declared(models: dict[str, OnnxModel], name: str, inputs, outputs) -> None:
    signature = models[name].signature
    assert {t.name: t.shape for t in signature.inputs} == inputs
    assert {t.name: t.shape for t in signature.outputs} == outputs
    assert all(t.datatype is DataType.FP32 for t in (*signature.inputs, *signature.outputs))


async def test_quickstart_chain_separates_the_classes(models: dict[str, OnnxModel]) -> None:
    x, y = bm.quickstart_data(2000, seed=HELD_OUT_SEED)
    (z,) = (await models["scaler"].run([x])).outputs
    (prob,) = (await models["classifier"].run([np.clip(z, -3.0, 3.0)])).outputs
    assert prob.shape == (2000, 1) and prob.dtype == np.float32
    assert prob.min() >= 0.0 and prob.max() <= 1.0
    assert roc_auc_score(y, prob[:, 0]) > 0.85


async def test_fraud_models_and_their_composition_rank_fraud_first(models: dict[str, OnnxModel]) -> None:
    amount, features, y = bm.fraud_data(20000, seed=HELD_OUT_SEED)
    x = bm.fraud_x(amount, features)
    high = amount[:, 0] > bm.HIGH_AMOUNT
    probs = {
        name: (await models[name].run([x])).outputs[0][:, 0]
        for name in ("ip_risk", "light", "deep", "deep_v2")
    }
    for name, prob in probs.items():
        assert prob.dtype == np.float32 and prob.min() >= 0.0 and prob.max() <= 1.0, name
    assert roc_auc_score(y, probs["ip_risk"]) > 0.8
    assert roc_auc_score(y[~high], probs["light"][~high]) > 0.8
    deep_auc = roc_auc_score(y[high], probs["deep"][high])
    assert deep_auc > 0.85 and deep_auc > roc_auc_score(y[high], probs["light"][high])  # worth the switch
    assert roc_auc_score(y[high], probs["deep_v2"][high]) > 0.85  # the shadow candidate is a real contender
    score = (probs["ip_risk"] + np.where(high, probs["deep"], probs["light"])) / 2  # what graph.yaml does
    assert roc_auc_score(y, score) > 0.85
    assert 0.001 < (score >= 0.5).mean() < 0.1  # the decision threshold flags a few rows


async def test_eta_model_predicts_delivery_minutes(models: dict[str, OnnxModel]) -> None:
    x, minutes = bm.eta_data(5000, seed=HELD_OUT_SEED)
    (predicted,) = (await models["eta"].run([x])).outputs
    assert predicted.shape == (5000, 1)
    error = np.abs(predicted[:, 0] - minutes)
    baseline = np.abs(minutes - minutes.mean()).mean()  # always answering the mean
    assert error.mean() < 0.35 * baseline, (error.mean(), baseline)
    far = x[:, 0] > np.median(x[:, 0])  # longer trips take longer, all else mixed
    assert predicted[far].mean() > predicted[~far].mean() + 3


def test_example_feature_files_match_their_generators() -> None:
    for relative, rows in bm.DATA_FILES.items():
        records = rows()
        lines = (REPO / relative).read_text().splitlines()
        assert lines[0] == ",".join(records[0]) and len(lines) == len(records) + 1, relative
        assert lines[1] == ",".join(str(v) for v in records[0].values()), relative


async def test_mlp32_matches_its_numpy_definition(built: Path, models: dict[str, OnnxModel]) -> None:
    weights = {
        t.name: numpy_helper.to_array(t)
        for t in onnx.load(built / "bench/models/mlp32.onnx").graph.initializer
    }
    x = np.random.default_rng(1).normal(size=(16, 32)).astype(np.float32)
    hidden = np.maximum(x @ weights["W1"] + weights["b1"], 0.0)
    expected = 1 / (1 + np.exp(-(hidden @ weights["W2"] + weights["b2"])))
    (y,) = (await models["mlp32"].run([x])).outputs
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("graph", ["quickstart", "fraud", "eta"])
def test_graph_yaml_model_nodes_fit_the_built_models(built: Path, models, graph: str) -> None:
    spec = yaml.safe_load((REPO / "graphs" / graph / "graph.yaml").read_text())
    model_nodes = {n: node for n, node in spec["nodes"].items() if "model" in node and "shadow" not in node}
    assert model_nodes
    for name, node in model_nodes.items():
        assert (built / "graphs" / graph / node["model"]).exists(), name
        signature = models[Path(node["model"]).stem].signature
        assert set(node["inputs"]) == {t.name for t in signature.inputs}, name
