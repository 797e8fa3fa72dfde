"""The typed form of a graph file: what the modeller wrote, with where they wrote it.

A ``GraphSpec`` is produced by ``engine.graph.reading.graph_reader`` from the YAML values and
is purely structural: references are still text, models are still file names.
``engine.graph.checking.validate`` resolves it against the loaded models, and
``engine.graph.compiling.compiler`` turns the result into a ``Plan``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.graph.values.contracts import Contract
from engine.graph.values.diagnostics import Pos
from engine.graph.values.logging_policy import OFF, LoggingPolicy
from engine.tensors import DataType

NodeKind = str  # "model" | "transform" | "combine" | "switch" | "split" | "features"


@dataclass(frozen=True, slots=True)
class Ref:
    """A reference as written: ``inputs.x``, ``node.tensor`` or ``node``."""

    text: str
    pos: Pos

    @property
    def source(self) -> str:
        """``"inputs"`` or the node name."""
        return self.text.split(".", 1)[0]

    @property
    def tensor(self) -> str | None:
        """The part after the first dot (graph input or tensor name), if any."""
        parts = self.text.split(".", 1)
        return parts[1] if len(parts) == 2 else None


@dataclass(frozen=True, slots=True)
class Param:
    """An op argument (``axis: -1``) and where its value was written."""

    value: Any
    pos: Pos
    key_pos: Pos


@dataclass(frozen=True, slots=True)
class InputSpec:
    name: str
    datatype: DataType
    shape: tuple[int, ...]
    description: str
    pos: Pos
    contract: Contract | None = None  # ``contract:``: rules every request's values must keep


@dataclass(frozen=True, slots=True)
class OutputSpec:
    name: str
    ref: Ref
    pos: Pos


@dataclass(frozen=True, slots=True)
class NodeCommon:
    """Keys every node may carry."""

    name: str
    pos: Pos  # the node's name key
    kind_pos: Pos  # the value of its kind key (``model: x.onnx`` -> ``x.onnx``)
    timeout_s: float | None = None
    description: str = ""
    on_error: str = "fail"  # "fail" | "default" | "fallback"
    default: bool | int | float | None = None  # on_error: {default: VALUE}
    fallback: str | None = None  # on_error: {fallback: NODE}
    on_error_pos: Pos | None = None  # the on_error value, for diagnostics
    optional: bool = False  # a failure leaves its outputs absent instead of failing the request


@dataclass(frozen=True, slots=True)
class ModelInput:
    """One wired model input: ``onnx_name`` is None when wired by position."""

    onnx_name: str | None
    ref: Ref
    key_pos: Pos


@dataclass(frozen=True, slots=True)
class BatchingSpec:
    """``batching:`` on a model node (read by ``engine.graph.reading.batching_reader``)."""

    max_batch_size: int
    max_queue_delay_s: float
    preferred_batch_sizes: tuple[int, ...]
    pos: Pos  # the max_batch_size value: where a model that cannot batch is reported


@dataclass(frozen=True, slots=True)
class ModelNode:
    common: NodeCommon
    path: str
    inputs: tuple[ModelInput, ...]
    inputs_pos: Pos
    threads: int = 1
    execution: str = "auto"
    batching: BatchingSpec | None = None
    sha256: str | None = None  # the ``sha256:`` pin: required for a URL, checked for any model
    kind: NodeKind = "model"


@dataclass(frozen=True, slots=True)
class OpNode:
    """A ``transform:`` or ``combine:`` node; ``params`` are its op's own keys."""

    common: NodeCommon
    kind: NodeKind  # "transform" | "combine"
    op: str
    inputs: tuple[Ref, ...]
    inputs_pos: Pos
    params: Mapping[str, Param] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SwitchCase:
    """``{when: EXPR, to: NODE}``, or the ``{default: NODE}`` case when ``when`` is None."""

    when: str | None
    when_pos: Pos
    target: str
    target_pos: Pos


@dataclass(frozen=True, slots=True)
class SwitchNode:
    common: NodeCommon
    cases: tuple[SwitchCase, ...]  # the default case is last
    kind: NodeKind = "switch"


@dataclass(frozen=True, slots=True)
class SplitArm:
    target: str
    target_pos: Pos
    weight: float
    weight_pos: Pos


@dataclass(frozen=True, slots=True)
class SplitNode:
    common: NodeCommon
    arms: tuple[SplitArm, ...]
    key: Ref | None = None
    kind: NodeKind = "split"


@dataclass(frozen=True, slots=True)
class FeatureFieldSpec:
    """One field of a ``features:`` node: ``name: {datatype: FP32, default: 0}``."""

    name: str
    datatype: DataType
    default: bool | int | float | str
    pos: Pos  # the field's name key
    contract: Contract | None = None  # ``contract:``: rules the fetched values must keep


@dataclass(frozen=True, slots=True)
class FeatureNode:
    """``features: SOURCE`` with ``key:`` and ``fields:``; one ``[-1, 1]`` output per field."""

    common: NodeCommon
    source: str
    key: Ref
    fields: tuple[FeatureFieldSpec, ...]
    fields_pos: Pos
    max_age_s: float | None = None
    cache_ttl_s: float | None = None
    cache_pos: Pos | None = None
    kind: NodeKind = "features"


@dataclass(frozen=True, slots=True)
class ShadowNode:
    """``shadow: TARGET`` with a candidate ``model:``: runs on the target's inputs, off the response path.

    ``compare`` is the plain ``compare:`` mapping (checked by ``engine.shadow.rules``);
    ``compare_pos`` is where each output name is written in it.
    """

    common: NodeCommon
    target: str
    target_pos: Pos
    path: str
    model_pos: Pos
    compare: Mapping[str, Any] = field(default_factory=dict)
    compare_pos: Mapping[str, Pos] = field(default_factory=dict)
    sample: float = 1.0
    threads: int = 1
    sha256: str | None = None  # the candidate's ``sha256:`` pin
    kind: NodeKind = "shadow"


NodeSpec = ModelNode | OpNode | SwitchNode | SplitNode | FeatureNode | ShadowNode


@dataclass(frozen=True, slots=True)
class ShadowOf:
    """``shadow_of:`` at graph level: this whole graph mirrors every request of graph ``graph``."""

    graph: str
    sample: float = 1.0
    timeout_s: float = 1.0
    compare: Mapping[str, Any] = field(default_factory=dict)
    compare_pos: Mapping[str, Pos] = field(default_factory=dict)
    pos: Pos = field(default_factory=lambda: Pos(1, 1))


@dataclass(frozen=True, slots=True)
class QualitySpec:
    """``quality:``: the served output labels are compared with (``engine.monitoring.quality``)."""

    output: str
    kind: str = "binary"  # binary (a probability, threshold) | regression
    threshold: float = 0.5
    pos: Pos = field(default_factory=lambda: Pos(1, 1))


@dataclass(frozen=True, slots=True)
class RolloutStep:
    """One step of a ``rollout:`` plan: ``shadow`` (mirrored, not served), ``canary`` (served to
    ``weight`` of requests) or ``promote``; a step lasts ``requests`` requests of the graph and/or
    ``duration_s`` seconds."""

    kind: str  # shadow | canary | promote
    weight: float = 0.0
    requests: int = 0  # 0: not bounded by requests
    pos: Pos = field(default_factory=lambda: Pos(1, 1))
    duration_s: float = 0.0  # 0: not bounded by time; with both, the step lasts until both are reached


@dataclass(frozen=True, slots=True)
class RolloutGates:
    """What a candidate must keep to stay in a rollout, against the serving version over the same window."""

    max_error_rate_increase: float | None = None
    max_p99_ratio: float | None = None
    min_agreement: Mapping[str, float] = field(default_factory=dict)  # output -> share of rows (shadow steps)
    min_requests: int = 1  # candidate requests in a step before any gate may judge it


@dataclass(frozen=True, slots=True)
class RolloutSpec:
    """``rollout:``: how this version replaces the serving one (``engine.serving.rollout``)."""

    steps: tuple[RolloutStep, ...]
    gates: RolloutGates = field(default_factory=RolloutGates)
    compare: Mapping[str, Any] = field(default_factory=dict)  # shadow steps' rules per output
    sticky: str = ""  # a graph input whose first value picks the arm ("" = the request id)
    pos: Pos = field(default_factory=lambda: Pos(1, 1))


@dataclass(frozen=True, slots=True)
class GraphSpec:
    name: str
    version: str
    description: str
    inputs: tuple[InputSpec, ...]
    nodes: tuple[NodeSpec, ...]
    outputs: tuple[OutputSpec, ...]
    file: str
    blocked: frozenset[str] = frozenset()  # nodes that failed to read: references to them are not re-reported
    blocked_inputs: frozenset[str] = frozenset()  # inputs that failed to read, likewise
    logging: LoggingPolicy = OFF  # the request-log policy (``logging:``); off by default
    shadow_of: ShadowOf | None = None  # this graph mirrors another graph's requests
    quality: QualitySpec | None = None  # label feedback: which output is the prediction
    rollout: RolloutSpec | None = None  # replaces the serving version step by step, not at once

    def node(self, name: str) -> NodeSpec | None:
        return next((n for n in self.nodes if n.common.name == name), None)
