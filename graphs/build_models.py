"""Build the example ONNX models reproducibly: seeded synthetic data, scikit-learn, skl2onnx.

    python graphs/build_models.py            # build only the files that are missing
    python graphs/build_models.py --force    # rebuild everything
    python graphs/build_models.py --root DIR # write DIR/graphs/... and DIR/bench/models/...

Every model gets clean tensor names after conversion: input ``x`` (FP32 [N, D]) and,
for classifiers, one output ``prob`` (FP32 [N, 1], probability of the positive class;
no label output, no ZipMap). Building twice gives byte-identical files: the data are
seeded, the estimators are deterministic, and every name, doc string and producer
field is fixed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.decomposition import PCA
from sklearn.ensemble import GradientBoostingClassifier, GradientBoostingRegressor
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

OPSET = 17  # default ONNX domain
ML_OPSET = 3  # ai.onnx.ml (tree ensembles)
IR_VERSION = 8  # the IR version that goes with opset 17
PRODUCER = "graph-engine/graphs/build_models.py"
ROOT = Path(__file__).resolve().parent.parent
USER_FEATURES = ("account_age_days", "txn_count_24h", "devices_30d")  # fetched by the graph (users source)
TXN_FEATURES = ("ip_risk_score", "foreign_card", "hour")  # sent by the caller with each transaction
FRAUD_FEATURES = USER_FEATURES + TXN_FEATURES
ETA_FEATURES = ("distance_km", "orders_30m", "avg_prep_min", "speed_kmh", "active_orders")
HIGH_AMOUNT = 1000.0

# --- synthetic data ---------------------------------------------------------------------------


def quickstart_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """x [n, 4] FP32 driven by two latent factors; y depends on the factors."""
    rng = np.random.default_rng(seed)
    t = rng.normal(size=(n, 2))
    mix = np.array([[1.0, 0.0], [1.0, -1.0], [0.0, 1.0], [0.5, 0.0]])
    x = t @ mix.T + 0.3 * rng.normal(size=(n, 4))
    y = rng.random(n) < 1 / (1 + np.exp(-3.0 * (t[:, 0] - 0.5 * t[:, 1])))
    return x.astype(np.float32), y.astype(np.int64)


def fraud_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """amount [n, 1], features [n, 6] (``FRAUD_FEATURES``), label [n]; fraud rate about 6%."""
    rng = np.random.default_rng(seed)
    amount = rng.lognormal(mean=5.0, sigma=1.4, size=n)
    age = np.clip(rng.exponential(700.0, size=n), 0.0, 3650.0)
    txn = rng.poisson(2.0, size=n).astype(float)
    ip = rng.beta(1.5, 6.0, size=n)
    devices = 1.0 + rng.poisson(1.2, size=n)
    foreign = (rng.random(n) < 0.15).astype(float)
    hour = rng.integers(0, 24, size=n).astype(float)
    high, new = amount > HIGH_AMOUNT, age < 90
    logit = (
        -7.0
        + 7.0 * ip
        + 0.6 * txn
        + 1.0 * (devices > 3)
        + 1.0 * ((hour < 6) & (foreign > 0))
        + 1.5 * new
        + 3.0 * (high & new)  # interactions a linear model cannot see
        + 2.0 * (high & (foreign > 0))
        + 2.0 * (high & (ip > 0.3))
    )
    y = rng.random(n) < 1 / (1 + np.exp(-logit))
    features = np.stack([age, txn, devices, ip, foreign, hour], axis=1)
    return amount[:, None].astype(np.float32), features.astype(np.float32), y.astype(np.int64)


def fraud_users(n: int = 500, seed: int = 5) -> list[dict[str, object]]:
    """The ``users`` feature rows of the fraud example (``USER_FEATURES`` per user id)."""
    rng = np.random.default_rng(seed)
    age = np.clip(rng.exponential(700.0, size=n), 0.0, 3650.0).round()
    txn = rng.poisson(2.0, size=n)
    devices = 1 + rng.poisson(1.2, size=n)
    return [
        {
            "user_id": f"u{i + 1:04d}",
            "account_age_days": int(a),
            "txn_count_24h": int(t),
            "devices_30d": int(d),
        }
        for i, (a, t, d) in enumerate(zip(age, txn, devices, strict=True))
    ]


def fraud_train(n: int = 3000, seed: int = 17) -> list[dict[str, object]]:
    """Training-like transactions of the fraud example, as callers send them (``amount``, ``user_id``,
    the ``txn`` columns by their contract names) with the label: what ``engine profile build
    graphs/fraud --data graphs/fraud/train.csv`` profiles (docs/monitoring.md)."""
    rng = np.random.default_rng(seed)
    users = fraud_users()
    pick = rng.integers(0, len(users), size=n)
    amount = rng.lognormal(mean=5.0, sigma=1.4, size=n)
    ip = rng.beta(1.5, 6.0, size=n)
    foreign = (rng.random(n) < 0.15).astype(float)
    hour = rng.integers(0, 24, size=n).astype(float)
    age = np.array([float(users[i]["account_age_days"]) for i in pick])  # type: ignore[arg-type]
    txn = np.array([float(users[i]["txn_count_24h"]) for i in pick])  # type: ignore[arg-type]
    devices = np.array([float(users[i]["devices_30d"]) for i in pick])  # type: ignore[arg-type]
    high, new = amount > HIGH_AMOUNT, age < 90
    logit = (
        -7.0 + 7.0 * ip + 0.6 * txn + 1.0 * (devices > 3) + 1.0 * ((hour < 6) & (foreign > 0)) + 1.5 * new
        + 3.0 * (high & new) + 2.0 * (high & (foreign > 0)) + 2.0 * (high & (ip > 0.3))
    )  # fmt: skip
    label = rng.random(n) < 1 / (1 + np.exp(-logit))
    return [
        {
            "request_id": f"t-{k + 1:05d}",
            "amount": round(float(amount[k]), 2),
            "user_id": users[int(pick[k])]["user_id"],
            "txn.ip_risk_score": round(float(ip[k]), 4),
            "txn.foreign_card": int(foreign[k]),
            "txn.hour": int(hour[k]),
            "is_fraud": int(label[k]),
        }
        for k in range(n)
    ]


def eta_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """x [n, 5] (``ETA_FEATURES``) and delivery minutes [n]."""
    rng = np.random.default_rng(seed)
    distance = rng.gamma(2.0, 1.5, size=n)
    orders = rng.poisson(8.0, size=n).astype(float)
    prep = np.clip(rng.normal(12.0, 4.0, size=n), 3.0, 40.0)
    speed = rng.choice([15.0, 25.0, 30.0], size=n) + rng.normal(0.0, 2.0, size=n)
    active = rng.poisson(1.0, size=n).astype(float)
    minutes = prep * (1.0 + 0.04 * orders) + distance / speed * 60.0 + 3.0 * active + rng.normal(0.0, 2.0, n)
    x = np.stack([distance, orders, prep, speed, active], axis=1)
    return x.astype(np.float32), np.maximum(minutes, 1.0).astype(np.float32)


def eta_restaurants(n: int = 200, seed: int = 21) -> list[dict[str, object]]:
    """The ``restaurants`` rows of the eta example: trailing 30-minute order count, mean prep time."""
    rng = np.random.default_rng(seed)
    orders, prep = rng.poisson(8.0, size=n), np.clip(rng.normal(12.0, 4.0, size=n), 3.0, 40.0)
    return [
        {"restaurant_id": f"r{i + 1:03d}", "orders_30m": int(o), "avg_prep_min": round(float(p), 1)}
        for i, (o, p) in enumerate(zip(orders, prep, strict=True))
    ]


def eta_couriers(n: int = 300, seed: int = 22) -> list[dict[str, object]]:
    """The ``couriers`` rows of the eta example: vehicle speed and orders already being carried."""
    rng = np.random.default_rng(seed)
    speed = rng.choice([15.0, 25.0, 30.0], size=n) + rng.normal(0.0, 2.0, size=n)
    active = rng.poisson(1.0, size=n)
    return [
        {"courier_id": f"c{i + 1:03d}", "speed_kmh": round(float(s), 1), "active_orders": int(a)}
        for i, (s, a) in enumerate(zip(speed, active, strict=True))
    ]


def fraud_x(amount: np.ndarray, features: np.ndarray) -> np.ndarray:
    """The model input the fraud graph builds: concat(log1p(amount), features), [n, 7]."""
    return np.concatenate([np.log1p(amount), features], axis=1).astype(np.float32)


# --- ONNX post-processing ---------------------------------------------------------------------


def _convert(estimator: object, name: str, width: int) -> onnx.ModelProto:
    return convert_sklearn(
        estimator,
        name=name,
        initial_types=[("x", FloatTensorType([None, width]))],
        target_opset={"": OPSET, "ai.onnx.ml": ML_OPSET},
        options={id(estimator): {"zipmap": False}} if hasattr(estimator, "predict_proba") else None,
    )


def _rename(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        node.input[:] = [new if n == old else n for n in node.input]
        node.output[:] = [new if n == old else n for n in node.output]
    for value in (*graph.input, *graph.output):
        if value.name == old:
            value.name = new


def _prune(graph: onnx.GraphProto) -> None:
    """Drop nodes and initializers no graph output depends on."""
    needed = {o.name for o in graph.output}
    kept = []
    for node in reversed(graph.node):
        if any(o in needed for o in node.output):
            kept.append(node)
            needed.update(node.input)
    del graph.node[:]
    graph.node.extend(reversed(kept))
    inits = [i for i in graph.initializer if i.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(inits)


def _finish(model: onnx.ModelProto, name: str, outputs: dict[str, int], doc: str) -> onnx.ModelProto:
    """Batch dims named N, fixed producer fields, opsets and IR version; checked."""
    graph = model.graph
    graph.name = name
    graph.doc_string = ""
    model.producer_name, model.producer_version, model.domain = PRODUCER, "1", ""
    model.model_version, model.doc_string, model.ir_version = 1, doc, IR_VERSION
    graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    del graph.output[:]
    graph.output.extend(
        helper.make_tensor_value_info(out, TensorProto.FLOAT, ["N", width]) for out, width in outputs.items()
    )
    del model.metadata_props[:]
    _prune(graph)
    ml = any(node.domain == "ai.onnx.ml" for node in graph.node)
    del model.opset_import[:]
    model.opset_import.extend(
        [helper.make_opsetid("", OPSET)] + ([helper.make_opsetid("ai.onnx.ml", ML_OPSET)] if ml else [])
    )
    onnx.checker.check_model(model, full_check=True)
    return model


def classifier_to_prob(estimator: object, name: str, width: int, doc: str) -> onnx.ModelProto:
    """A binary classifier as x [N, width] -> prob [N, 1] (positive-class probability)."""
    model = _convert(estimator, name, width)
    probs = next(o.name for o in model.graph.output if "prob" in o.name)
    consts = {k: numpy_helper.from_array(np.array([v], np.int64), f"prob_{k}") for k, v in
              (("start", 1), ("end", 2), ("axis", 1))}  # fmt: skip
    model.graph.initializer.extend(consts.values())
    model.graph.node.append(
        helper.make_node("Slice", [probs, *(c.name for c in consts.values())], ["prob"], name="positive")
    )
    return _finish(model, name, {"prob": 1}, doc)


def transformer_to(
    estimator: object, name: str, width: int, out: str, out_width: int, doc: str
) -> onnx.ModelProto:
    """A transformer as x [N, width] -> ``out`` [N, out_width]."""
    model = _convert(estimator, name, width)
    _rename(model.graph, model.graph.output[0].name, out)
    return _finish(model, name, {out: out_width}, doc)


# --- the models ---------------------------------------------------------------------------------


def build_quickstart() -> dict[str, onnx.ModelProto]:
    x, y = quickstart_data(4000, seed=7)
    scaler = make_pipeline(StandardScaler(), PCA(n_components=2, svd_solver="full")).fit(x)
    z = np.clip(scaler.transform(x), -3.0, 3.0).astype(np.float32)  # the graph's expr node
    classifier = LogisticRegression(max_iter=1000).fit(z, y)
    return {
        "scaler.onnx": transformer_to(scaler, "scaler", 4, "z", 2, "StandardScaler+PCA(2): x[N,4] -> z[N,2]"),
        "classifier.onnx": classifier_to_prob(classifier, "classifier", 2, "LogisticRegression on clip(z)"),
    }


def build_fraud() -> dict[str, onnx.ModelProto]:
    amount, features, y = fraud_data(30000, seed=11)
    x = fraud_x(amount, features)
    high = amount[:, 0] > HIGH_AMOUNT

    def logistic(c: float) -> Pipeline:
        return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=1000))

    ip_risk = logistic(1.0).fit(x, y)
    light = logistic(0.1).fit(x[~high], y[~high])
    deep = GradientBoostingClassifier(n_estimators=80, max_depth=3, learning_rate=0.1, random_state=0)
    deep.fit(x[high], y[high])
    # The shadow candidate: deep, retrained deeper and slower-learning on twice the high-amount rows.
    amount2, features2, y2 = fraud_data(30000, seed=12)
    high2 = amount2[:, 0] > HIGH_AMOUNT
    x_v2 = np.concatenate([x[high], fraud_x(amount2, features2)[high2]])
    y_v2 = np.concatenate([y[high], y2[high2]])
    deep_v2 = GradientBoostingClassifier(
        n_estimators=150, max_depth=4, learning_rate=0.05, subsample=0.8, random_state=1
    ).fit(x_v2, y_v2)
    return {
        "ip_risk.onnx": classifier_to_prob(ip_risk, "ip_risk", 7, "LogisticRegression, all rows"),
        "light.onnx": classifier_to_prob(light, "light", 7, "LogisticRegression, amount <= 1000"),
        "deep.onnx": classifier_to_prob(deep, "deep", 7, "GradientBoosting(80x3), amount > 1000"),
        "deep_v2.onnx": classifier_to_prob(
            deep_v2, "deep_v2", 7, "GradientBoosting(150x4, subsample 0.8), amount > 1000, 2x data"
        ),
    }


def build_eta() -> dict[str, onnx.ModelProto]:
    x, minutes = eta_data(20000, seed=23)
    model = GradientBoostingRegressor(n_estimators=60, max_depth=3, learning_rate=0.1, random_state=0)
    model.fit(x, minutes)
    onnx_model = _convert(model, "eta", len(ETA_FEATURES))
    _rename(onnx_model.graph, onnx_model.graph.output[0].name, "minutes")
    doc = "GradientBoostingRegressor(60x3): [distance_km, orders_30m, avg_prep_min, speed_kmh, active_orders]"
    return {"eta.onnx": _finish(onnx_model, "eta", {"minutes": 1}, doc)}


def build_mlp32() -> dict[str, onnx.ModelProto]:
    """y = sigmoid(relu(x @ W1 + b1) @ W2 + b2): 32 -> 64 -> 1, seeded weights."""
    rng = np.random.default_rng(32)
    weights = {
        "W1": rng.normal(0.0, 1 / np.sqrt(32), (32, 64)),
        "b1": rng.normal(0.0, 0.1, 64),
        "W2": rng.normal(0.0, 1 / np.sqrt(64), (64, 1)),
        "b2": np.zeros(1),
    }
    nodes = [
        helper.make_node("MatMul", ["x", "W1"], ["h0"], name="dense1"),
        helper.make_node("Add", ["h0", "b1"], ["h1"], name="bias1"),
        helper.make_node("Relu", ["h1"], ["h"], name="relu"),
        helper.make_node("MatMul", ["h", "W2"], ["o0"], name="dense2"),
        helper.make_node("Add", ["o0", "b2"], ["o"], name="bias2"),
        helper.make_node("Sigmoid", ["o"], ["y"], name="sigmoid"),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp32",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])],
        [numpy_helper.from_array(w.astype(np.float32), k) for k, w in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.producer_name, model.producer_version = PRODUCER, "1"
    model.doc_string, model.ir_version = "MLP 32->64->1 (ReLU, sigmoid), seeded weights", IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return {"mlp32.onnx": model}


def build_wide() -> onnx.ModelProto:
    """y = sigmoid(relu(relu(x @ W1 + b1) @ W2 + b2) @ W3 + b3): 512 -> 2048 -> 2048 -> 1, seeded.

    Heavy enough that one row costs about a millisecond (its 20 MB of weights stream from memory
    for every run, whatever the rows), so dynamic batching pays: measured here, 64 rows took 7-10x
    one row's time, i.e. 6-9x less per row (bench/batching.py)."""
    rng = np.random.default_rng(512)
    weights = {
        "W1": rng.normal(0.0, 1 / np.sqrt(512), (512, 2048)),
        "b1": rng.normal(0.0, 0.1, 2048),
        "W2": rng.normal(0.0, 1 / np.sqrt(2048), (2048, 2048)),
        "b2": rng.normal(0.0, 0.1, 2048),
        "W3": rng.normal(0.0, 1 / np.sqrt(2048), (2048, 1)),
        "b3": np.zeros(1),
    }
    nodes = [
        helper.make_node("MatMul", ["x", "W1"], ["a0"], name="dense1"),
        helper.make_node("Add", ["a0", "b1"], ["a1"], name="bias1"),
        helper.make_node("Relu", ["a1"], ["a"], name="relu1"),
        helper.make_node("MatMul", ["a", "W2"], ["c0"], name="dense2"),
        helper.make_node("Add", ["c0", "b2"], ["c1"], name="bias2"),
        helper.make_node("Relu", ["c1"], ["c"], name="relu2"),
        helper.make_node("MatMul", ["c", "W3"], ["o0"], name="dense3"),
        helper.make_node("Add", ["o0", "b3"], ["o"], name="bias3"),
        helper.make_node("Sigmoid", ["o"], ["y"], name="sigmoid"),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp_wide",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 512])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])],
        [numpy_helper.from_array(w.astype(np.float32), k) for k, w in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.producer_name, model.producer_version = PRODUCER, "1"
    model.doc_string, model.ir_version = "MLP 512->2048->2048->1 (ReLU, sigmoid), seeded weights", IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def build_bench() -> dict[str, onnx.ModelProto]:
    return {**build_mlp32(), "mlp_wide.onnx": build_wide()}


STAMP = ".models-recipe"
"""Per model folder: the sha256 of this script when its models were built; a changed script rebuilds."""


@dataclass(frozen=True)
class ModelGroup:
    folder: str  # relative to the root
    build: Callable[[], dict[str, onnx.ModelProto]]
    files: tuple[str, ...]


GROUPS = (
    ModelGroup("graphs/quickstart", build_quickstart, ("scaler.onnx", "classifier.onnx")),
    ModelGroup("graphs/fraud", build_fraud, ("ip_risk.onnx", "light.onnx", "deep.onnx", "deep_v2.onnx")),
    ModelGroup("graphs/eta", build_eta, ("eta.onnx",)),
    ModelGroup("bench/models", build_bench, ("mlp32.onnx", "mlp_wide.onnx")),
)

DATA_FILES: dict[str, Callable[[], list[dict[str, object]]]] = {
    "graphs/fraud/users.csv": fraud_users,
    "graphs/fraud/train.csv": fraud_train,
    "graphs/eta/restaurants.csv": eta_restaurants,
    "graphs/eta/couriers.csv": eta_couriers,
}
"""The example feature stores' rows (static sources in graphs/engine.yaml); committed, rebuilt by --data."""


def fraud_requests(n: int = 500) -> list[str]:
    """The first ``n`` rows of ``fraud_train`` as V2 requests with their request ids (JSON Lines, the
    loadtest ``jsonl`` source): traffic whose labels are in train.csv (docs/monitoring.md)."""
    lines = []
    for row in fraud_train()[:n]:
        txn = [[row["txn.ip_risk_score"], row["txn.foreign_card"], row["txn.hour"]]]
        inputs = {
            "amount": {"datatype": "FP32", "shape": [1, 1], "data": [[row["amount"]]]},
            "user_id": {"datatype": "BYTES", "shape": [1, 1], "data": [[row["user_id"]]]},
            "txn": {"datatype": "FP32", "shape": [1, 3], "data": txn},
        }
        lines.append(json.dumps({"id": row["request_id"], "inputs": inputs}, separators=(",", ":")))
    return lines


def write_data(root: Path = ROOT, log: Callable[[str], None] = print) -> None:
    for relative, rows in DATA_FILES.items():
        records = rows()
        columns = list(records[0])
        lines = [",".join(columns)] + [",".join(str(r[c]) for c in columns) for r in records]
        _write(root / relative, ("\n".join(lines) + "\n").encode())
        log(f"wrote       {relative} ({len(records)} rows)")
    requests = fraud_requests()
    _write(root / "graphs/fraud/requests.jsonl", ("\n".join(requests) + "\n").encode())
    log(f"wrote       graphs/fraud/requests.jsonl ({len(requests)} requests)")


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)  # a server never sees half a file


def build_all(
    root: Path = ROOT,
    *,
    force: bool = False,
    groups: Sequence[ModelGroup] = GROUPS,
    log: Callable[[str], None] = print,
) -> list[Path]:
    """Build every missing model (all of them with ``force``) under ``root``; returns the files written."""
    written: list[Path] = []
    recipe = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()
    for group in groups:
        folder = root / group.folder
        stamp = folder / STAMP
        stale = not stamp.exists() or stamp.read_text().strip() != recipe  # this script changed
        missing = [f for f in group.files if force or stale or not (folder / f).exists()]
        if not missing:
            log(f"up to date  {group.folder}/ ({', '.join(group.files)})")
            continue
        start = time.perf_counter_ns()
        models = group.build()
        for name in missing:
            data = models[name].SerializeToString(deterministic=True)
            _write(folder / name, data)
            written.append(folder / name)
            digest = hashlib.sha256(data).hexdigest()[:12]
            log(f"built       {group.folder}/{name} ({len(data):,} bytes, sha256 {digest}…)")
        _write(stamp, recipe.encode())
        log(f"            {group.folder}/ trained in {(time.perf_counter_ns() - start) / 1e9:.2f}s")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="rebuild files that already exist")
    parser.add_argument("--root", type=Path, default=ROOT, help="write under this folder (default: repo)")
    parser.add_argument("--data", action="store_true", help="also rewrite the example feature files (CSV)")
    args = parser.parse_args(argv)
    build_all(args.root, force=args.force)
    if args.data:
        write_data(args.root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
