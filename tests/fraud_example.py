"""The fraud example's interface (graphs/fraud/graph.yaml) for tests: requests, its feature source, and
the graph computed by hand.

Callers send ``amount`` FP32 [N, 1], ``user_id`` BYTES [N, 1] and ``txn`` FP32 [N, 3] =
(ip_risk_score, foreign_card, hour); the graph fetches the user's account_age_days, txn_count_24h and
devices_30d from the ``users`` feature source (graphs/fraud/users.csv, declared in graphs/engine.yaml)
and scores ``x = fraud_x(amount, user features + txn)``.
"""

from __future__ import annotations

import csv
import functools
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import onnxruntime as ort

from engine.config import read_config_file

GRAPHS = Path(__file__).resolve().parents[1] / "graphs"
USER_DEFAULTS = {"account_age_days": 0.0, "txn_count_24h": 0.0, "devices_30d": 1.0}  # unknown user_id
KNOWN_USERS = ("u0001", "u0108", "u0200", "u0500")  # rows of users.csv
UNKNOWN_USER = "nobody"


@functools.cache
def build_models() -> ModuleType:
    """graphs/build_models.py as a module (``fraud_x``, ``USER_FEATURES``, ``TXN_FEATURES``...)."""
    spec = importlib.util.spec_from_file_location("build_models", GRAPHS / "build_models.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


def feature_sources() -> dict[str, Any]:
    """graphs/engine.yaml's ``feature_sources`` (paths absolute): for a server on a copy of the graphs."""
    return read_config_file(GRAPHS / "engine.yaml")["feature_sources"]


@functools.cache
def users() -> dict[str, tuple[float, ...]]:
    """users.csv: user_id -> its ``USER_FEATURES`` values."""
    names = build_models().USER_FEATURES
    with (GRAPHS / "fraud" / "users.csv").open(newline="") as file:
        return {row["user_id"]: tuple(float(row[n]) for n in names) for row in csv.DictReader(file)}


def user_features(user_id: np.ndarray) -> np.ndarray:
    """[N, 3] in ``USER_FEATURES`` order: the CSV row of each id, the graph's defaults for unknown ids."""
    defaults = tuple(USER_DEFAULTS[n] for n in build_models().USER_FEATURES)
    rows = []
    for raw in np.asarray(user_id, dtype=object).reshape(-1):
        key = raw.decode() if isinstance(raw, bytes) else str(raw)
        rows.append(users().get(key, defaults))
    return np.array(rows, dtype=np.float32).reshape(-1, len(defaults))


def user_ids(*ids: str) -> np.ndarray:
    """A BYTES [N, 1] tensor of user ids."""
    return np.array([[i.encode()] for i in ids], dtype=object)


def batch(rows: int, seed: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``amount``, ``user_id``, ``txn`` for ``rows`` random transactions; about 1 in 5 users unknown."""
    rng = np.random.default_rng(seed)
    amount = rng.choice([20.0, 400.0, 999.0, 1000.0, 1001.0, 2500.0, 9000.0], size=(rows, 1)).astype(
        np.float32
    )
    known = sorted(users())
    ids = [
        f"x{rng.integers(0, 10_000):04d}" if rng.random() < 0.2 else known[rng.integers(0, len(known))]
        for _ in range(rows)
    ]
    txn = np.column_stack(
        [rng.uniform(0, 1, rows), rng.integers(0, 2, rows), rng.integers(0, 24, rows)]
    ).astype(np.float32)
    return amount, user_ids(*ids), txn


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def by_hand(
    amount: np.ndarray, user_id: np.ndarray, txn: np.ndarray, folder: Path = GRAPHS / "fraud"
) -> tuple[np.ndarray, np.ndarray]:
    """``score`` and ``decision`` as the graph computes them, with the models run in onnxruntime."""
    x = build_models().fraud_x(amount, np.concatenate([user_features(user_id), txn], axis=1))
    ip = _run(folder / "ip_risk.onnx", x)
    routed = np.where(amount > 1000, _run(folder / "deep.onnx", x), _run(folder / "light.onnx", x))
    score = ((ip + routed) / 2).astype(np.float32)
    return score, score >= 0.5
