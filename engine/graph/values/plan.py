"""The compiled form of one graph version: what the executor runs.

A graph YAML is parsed, validated and compiled once per version into a
``Plan``. Per request the executor only moves arrays between numbered *slots*:
``values = [None] * plan.n_slots``; graph input *i* goes to slot *i*; each step
reads its ``inputs`` slots and writes its ``outputs`` slots. Nothing here is
parsed, looked up by name or re-planned per request.

Steps are grouped in ``stages``: every step of a stage depends only on slots
written by earlier stages (or graph inputs), so the steps of one stage may run
concurrently. A stage with a single step (a chain) runs without creating tasks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from engine.graph.values.contracts import Contract
from engine.interfaces import FeatureField, FeatureSource, ModelRuntime
from engine.shadow.compare import ShadowConfig
from engine.tensors import TensorSpec

RowFunction = Callable[[Sequence[np.ndarray]], tuple[np.ndarray, ...]]
"""A synchronous numpy function: input arrays in, output arrays out."""

Router = Callable[[Sequence[np.ndarray]], np.ndarray]
"""Maps a route step's input arrays to an int array: the branch index of each row."""


@dataclass(frozen=True, slots=True)
class DefaultFill:
    """``on_error: {default: VALUE}``: every output becomes VALUE, one row per batch row."""

    value: bool | int | float
    outputs: tuple[TensorSpec, ...]  # the failed node's outputs (fixed beyond the batch dim)


@dataclass(frozen=True, slots=True)
class Fallback:
    """``on_error: {fallback: NODE}``: NODE's steps run instead; ``results`` are its output slots,
    aligned with the failed step's ``outputs``."""

    label: str
    steps: tuple[Step, ...]
    results: tuple[int, ...]


Recovery = DefaultFill | Fallback


@dataclass(frozen=True, slots=True)
class ShadowStep:
    """A candidate model mirroring a ModelStep: fed the same arrays when the target starts,
    run off the response path by the shadow pool; ``output_names`` in the candidate's order."""

    name: str
    target: str
    runtime: ModelRuntime
    output_names: tuple[str, ...]
    config: ShadowConfig


@dataclass(frozen=True, slots=True)
class ModelStep:
    """Run one model. ``inputs``/``outputs`` follow the model signature's order."""

    name: str
    runtime: ModelRuntime
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    output_names: tuple[str, ...]
    timeout_s: float | None = None
    kind: str = "model"
    recovery: Recovery | None = None
    optional: bool = False  # a failure leaves the outputs absent (None); steps needing them are skipped
    shadows: tuple[ShadowStep, ...] = ()  # candidates mirroring this node (``shadow:`` nodes)


@dataclass(frozen=True, slots=True)
class FunctionStep:
    """A built-in transform or combine: a synchronous numpy function, run inline."""

    name: str
    kind: str  # "transform" | "combine"
    op: str  # e.g. "concat", "expr", "mean"
    fn: RowFunction
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    output_names: tuple[str, ...]
    timeout_s: float | None = None
    recovery: Recovery | None = None
    optional: bool = False


@dataclass(frozen=True, slots=True)
class Branch:
    """One branch of a switch or split: steps that run on that branch's rows only.

    Before the branch runs, each slot in ``row_inputs`` (written outside the
    branch) is narrowed to the branch's rows. ``results`` are the slots, written
    by ``steps``, that hold the branch's outputs, aligned with the route step's
    ``outputs``.
    """

    label: str
    steps: tuple[Step, ...]
    row_inputs: tuple[int, ...]
    results: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class RouteStep:
    """A switch (per-row condition) or split (weighted, optionally sticky).

    ``router`` gives each row a branch index; each branch runs on its rows;
    ``outputs`` receive the branches' results reassembled in row order.
    """

    name: str
    kind: str  # "switch" | "split"
    router: Router
    inputs: tuple[int, ...]
    branches: tuple[Branch, ...]
    outputs: tuple[int, ...]
    output_names: tuple[str, ...]
    output_specs: tuple[TensorSpec, ...]
    timeout_s: float | None = None
    recovery: Recovery | None = None
    optional: bool = False


@dataclass(frozen=True, slots=True)
class FeatureStep:
    """Fetch ``fields`` of each row's key from ``source``; one ``[rows, 1]`` output per field.

    ``use_defaults``: on a timeout or a store failure every value takes its field's default
    (statuses say why) instead of failing the request with UNAVAILABLE.
    """

    name: str
    source: FeatureSource
    source_name: str
    fields: tuple[FeatureField, ...]
    inputs: tuple[int, ...]  # (the key slot,)
    outputs: tuple[int, ...]  # aligned with ``fields``
    output_names: tuple[str, ...]
    timeout_s: float | None = None
    max_age_s: float | None = None
    use_defaults: bool = False
    contracts: tuple[
        tuple[int, Contract], ...
    ] = ()  # (output index, its field's ``contract:``), checked on every fetch
    kind: str = "features"
    recovery: Recovery | None = None
    optional: bool = False


Step = ModelStep | FunctionStep | RouteStep | FeatureStep


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """A node as people see it: for DescribeGraph, ModelConfig steps, drawings, explain."""

    name: str
    kind: str  # model | transform | combine | switch | split | features | shadow
    detail: str  # model file, op name, expression, …
    inputs: tuple[str, ...]  # references, as written (resolved form: "inputs.x", "node.tensor")
    outputs: tuple[TensorSpec, ...]
    branches: tuple[str, ...] = ()  # switch/split: target node names, in order
    model_path: str | None = None  # relative to the graph folder
    model_sha256: str | None = None
    line: int = 0  # where the node is declared in graph.yaml
    marks: tuple[str, ...] = ()  # "timeout 20ms", "on error: default 0.5", "optional", "batching …", …
    fallback: str | None = None  # on_error: {fallback: NODE}: the node that backs this one up
    shadows: tuple[str, ...] = ()  # shadow nodes mirroring this one
    input_specs: tuple[TensorSpec, ...] = ()  # what it reads, aligned with ``inputs``: a model's by its
    # ONNX input names, other nodes' by the reference they read ("inputs.amount", "deep.prob")


@dataclass(frozen=True, slots=True)
class Plan:
    graph: str
    version: str
    inputs: tuple[TensorSpec, ...]  # graph input i lives in slot i
    outputs: tuple[TensorSpec, ...]  # served outputs (name as served, inferred datatype/shape)
    output_slots: tuple[int, ...]  # aligned with ``outputs``
    stages: tuple[tuple[Step, ...], ...]
    n_slots: int
    slot_names: tuple[str, ...]  # "inputs.amount", "deep.prob", … for messages and explain
    batch_inputs: tuple[int, ...]  # input slots whose first dim is the batch (-1): must agree
    nodes: tuple[NodeInfo, ...]  # every node, in topological order
    contracts: tuple[tuple[int, Contract], ...] = ()  # (input slot, its contract): checked after decode
