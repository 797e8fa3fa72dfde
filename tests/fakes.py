"""In-memory test doubles for the kernel interfaces (no onnxruntime, no gRPC)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.interfaces import ModelOptions, ModelRun, ModelSignature, NodeEvent, RuntimeTraits
from engine.tensors import DataType, TensorSpec

ModelFn = Callable[..., tuple[np.ndarray, ...]]


def spec(name: str, datatype: str = "FP32", shape: Sequence[int] = (-1, 1)) -> TensorSpec:
    return TensorSpec(name, DataType.parse(datatype), tuple(shape))


@dataclass
class FakeModel:
    """A ModelRuntime whose ``run`` calls a Python function; counts calls and rows."""

    signature: ModelSignature
    fn: ModelFn
    path: Path = Path("fake.onnx")
    delay_s: float = 0.0
    calls: int = 0
    rows_seen: list[int] = field(default_factory=list)
    closed: bool = False

    @property
    def sha256(self) -> str:
        return hashlib.sha256(str(self.path).encode()).hexdigest()

    traits: RuntimeTraits = field(default_factory=RuntimeTraits)
    deadlines: list[float | None] = field(default_factory=list)

    def run_inline(self, inputs: Sequence[np.ndarray]) -> tuple[np.ndarray, ...]:
        self.calls += 1
        self.rows_seen.append(int(inputs[0].shape[0]) if inputs and inputs[0].ndim else 0)
        return tuple(self.fn(*inputs))

    async def run(self, inputs: Sequence[np.ndarray], *, deadline: float | None = None) -> ModelRun:
        self.calls += 1
        self.deadlines.append(deadline)
        self.rows_seen.append(int(inputs[0].shape[0]) if inputs and inputs[0].ndim else 0)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return ModelRun(tuple(self.fn(*inputs)))

    def close(self) -> None:
        self.closed = True


@dataclass
class FakeRuntimeFactory:
    """Serves FakeModels by file name; a name mapped to an Exception raises it on load."""

    models: dict[str, FakeModel | Exception]
    loaded: list[str] = field(default_factory=list)
    queue_depth: int = 0
    terminated_runs: int = 0
    closed: bool = False

    def close(self) -> None:
        self.closed = True

    def load(self, path: Path, options: ModelOptions) -> FakeModel:
        self.loaded.append(path.name)
        model = self.models.get(path.name)
        if model is None:
            raise ValueError(f"no such model file: {path.name}")
        if isinstance(model, Exception):
            raise model
        model.path = path
        return model


def linear_model(
    in_name: str = "x", out_name: str = "y", width: int = 1, scale: float = 2.0, offset: float = 0.0
) -> FakeModel:
    """y = x.sum(axis=1, keepdims=True) * scale + offset, FP32 [-1, width] -> [-1, 1]."""

    def fn(x: np.ndarray) -> tuple[np.ndarray, ...]:
        return ((x.sum(axis=1, keepdims=True) * scale + offset).astype(np.float32),)

    sig = ModelSignature(inputs=(spec(in_name, shape=(-1, width)),), outputs=(spec(out_name),))
    return FakeModel(signature=sig, fn=fn)


@dataclass
class RecordingObserver:
    events: list[NodeEvent] = field(default_factory=list)

    def on_node(self, event: NodeEvent) -> None:
        self.events.append(event)
