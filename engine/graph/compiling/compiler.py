"""A validated ``Analysis`` -> the executor's ``Plan``.

Slots: graph inputs take slots 0..k-1 in declaration order, then every node
output in topological order (``node.tensor``; a switch/split's outputs are
``route.tensor``). Nodes owned by a switch or split are compiled into that
route's ``Branch`` steps, never into stages. Stages are topological levels of
the remaining steps (stdlib ``graphlib``): every step of a stage reads only
graph inputs and slots written by earlier stages.
"""

from __future__ import annotations

import graphlib

from engine.graph.checking.scope import NodeResult
from engine.graph.checking.validate import Analysis
from engine.graph.reading.shadow_reader import DEFAULT_TIMEOUT_S
from engine.graph.values.contracts import Contract
from engine.graph.values.plan import (
    Branch,
    DefaultFill,
    Fallback,
    FeatureStep,
    FunctionStep,
    ModelStep,
    NodeInfo,
    Plan,
    Recovery,
    RouteStep,
    ShadowStep,
    Step,
)
from engine.graph.values.spec import (
    FeatureNode,
    GraphSpec,
    InputSpec,
    ModelNode,
    NodeSpec,
    OpNode,
    ShadowNode,
)
from engine.interfaces import FeatureField
from engine.shadow.compare import ShadowConfig
from engine.tensors import TensorSpec


class _Slots:
    def __init__(self) -> None:
        self.names: list[str] = []
        self.index: dict[str, int] = {}

    def add(self, name: str) -> int:
        self.index[name] = len(self.names)
        self.names.append(name)
        return self.index[name]

    def of(self, names: tuple[str, ...]) -> tuple[int, ...]:
        return tuple(self.index[n] for n in names)


def compile_plan(analysis: Analysis) -> Plan:
    """Number the slots, build each step, group top-level steps into stages."""
    spec = analysis.spec
    slots = _Slots()
    for tensor in analysis.inputs:
        slots.add(f"inputs.{tensor.name}")
    for name in analysis.order:
        for tensor in analysis.results[name].outputs:
            slots.add(f"{name}.{tensor.name}")
    builder = _StepBuilder(analysis, slots)
    top = [n for n in analysis.order if n not in analysis.owner and not isinstance(spec.node(n), ShadowNode)]
    steps = {name: builder.step(name) for name in top}
    producer = {slot: name for name in top for slot in steps[name].outputs}
    sorter: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter()
    for name in top:
        sorter.add(name, *{producer[s] for s in builder.reads_of(steps[name]) if s in producer})
    sorter.prepare()
    position = {name: i for i, name in enumerate(analysis.order)}
    stages: list[tuple[Step, ...]] = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready(), key=position.__getitem__)
        stages.append(tuple(steps[n] for n in ready))
        sorter.done(*ready)
    return Plan(
        graph=spec.name,
        version=spec.version,
        inputs=analysis.inputs,
        outputs=tuple(o for o, _ in analysis.outputs),
        output_slots=tuple(slots.index[s] for _, s in analysis.outputs),
        stages=tuple(stages),
        n_slots=len(slots.names),
        slot_names=tuple(slots.names),
        batch_inputs=tuple(i for i, t in enumerate(analysis.inputs) if t.shape and t.shape[0] == -1),
        nodes=tuple(
            _info(analysis.results[n], _shadows_of(spec, n), _slot_specs(analysis)) for n in analysis.order
        ),
        contracts=tuple(
            (i, c)
            for i, tensor in enumerate(analysis.inputs)
            if (c := _input_contract(spec.inputs, tensor.name)) is not None
        ),
    )


def _input_contract(inputs: tuple[InputSpec, ...], name: str) -> Contract | None:
    return next((i.contract for i in inputs if i.name == name), None)


def _slot_specs(analysis: Analysis) -> dict[str, TensorSpec]:
    """Every slot's spec by its name: graph inputs and every node's outputs."""
    found = {f"inputs.{s.name}": s for s in analysis.inputs}
    for name, result in analysis.results.items():
        found.update({f"{name}.{t.name}": t for t in result.outputs})
    return found


def _shadows_of(spec: GraphSpec, name: str) -> tuple[str, ...]:
    return tuple(n.common.name for n in spec.nodes if isinstance(n, ShadowNode) and n.target == name)


def _seconds(value: float) -> str:
    """``20ms``, ``1.5s``, ``500us``: a duration as a graph file would write it."""
    if value >= 1:
        return f"{value:g}s"
    if value >= 1e-3:
        return f"{value * 1e3:g}ms"
    return f"{value * 1e6:g}us"


def _marks(node: NodeSpec, shadows: tuple[str, ...]) -> tuple[str, ...]:
    """What a drawing notes beside a node: how it fails, how long it may take, how it runs."""
    common = node.common
    marks: list[str] = []
    if common.timeout_s is not None and not isinstance(node, ShadowNode):  # a shadow's detail has it
        marks.append(f"timeout {_seconds(common.timeout_s)}")
    if common.on_error == "default":
        default = "field defaults" if isinstance(node, FeatureNode) else f"default {common.default!r}"
        marks.append(f"on error: {default}")
    elif common.on_error == "fallback":
        marks.append(f"on error: fallback {common.fallback}")
    if common.optional:
        marks.append("optional")
    if isinstance(node, ModelNode) and node.batching is not None:
        batching = node.batching
        marks.append(f"batching ≤{batching.max_batch_size} rows, {_seconds(batching.max_queue_delay_s)}")
    if shadows:
        marks.append(f"shadowed by {', '.join(shadows)}")
    return tuple(marks)


def _input_specs(result: NodeResult, slots: dict[str, TensorSpec]) -> tuple[TensorSpec, ...]:
    """What the node reads: a model's ONNX inputs by their own names, others' by the slot read."""
    runtime = result.runtime
    if runtime is not None and len(runtime.signature.inputs) == len(result.reads):
        return tuple(runtime.signature.inputs)
    return tuple(
        TensorSpec(read, slots[read].datatype, slots[read].shape) for read in result.reads if read in slots
    )


def _info(
    result: NodeResult, shadows: tuple[str, ...] = (), slots: dict[str, TensorSpec] | None = None
) -> NodeInfo:
    node = result.node
    return NodeInfo(
        input_specs=_input_specs(result, slots or {}),
        marks=_marks(node, shadows),
        fallback=node.common.fallback if node.common.on_error == "fallback" else None,
        shadows=shadows,
        name=node.common.name,
        kind=node.kind,
        detail=result.detail,
        inputs=result.shown_inputs,
        outputs=result.outputs,
        branches=result.targets,
        model_path=result.model_path,
        model_sha256=result.runtime.sha256 if result.runtime is not None else None,
        line=node.common.pos.line,
    )


class _StepBuilder:
    def __init__(self, analysis: Analysis, slots: _Slots) -> None:
        self.analysis = analysis
        self.slots = slots

    def step(self, name: str) -> Step:
        result = self.analysis.results[name]
        node = result.node
        inputs = self.slots.of(result.reads)
        outputs = self.slots.of(tuple(f"{name}.{t.name}" for t in result.outputs))
        output_names = tuple(t.name for t in result.outputs)
        timeout = node.common.timeout_s
        recovery = self._recovery(name, output_names)
        if result.runtime is not None:
            return ModelStep(
                name,
                result.runtime,
                inputs,
                outputs,
                output_names,
                timeout,
                recovery=recovery,
                optional=node.common.optional,
                shadows=self._shadows(name),
            )
        if isinstance(node, FeatureNode):
            assert result.source is not None
            return FeatureStep(
                name,
                result.source,
                node.source,
                tuple(FeatureField(f.name, f.datatype, f.default) for f in node.fields),
                inputs,
                outputs,
                output_names,
                timeout,
                node.max_age_s,
                use_defaults=node.common.on_error == "default",
                contracts=tuple((k, f.contract) for k, f in enumerate(node.fields) if f.contract is not None),
                recovery=recovery,
                optional=node.common.optional,
            )
        if isinstance(node, OpNode):
            assert result.fn is not None
            return FunctionStep(
                name,
                node.kind,
                node.op,
                result.fn,
                inputs,
                outputs,
                output_names,
                timeout,
                recovery=recovery,
                optional=node.common.optional,
            )
        assert result.router is not None
        branches = tuple(self._branch(target, output_names) for target in result.targets)
        if not inputs:  # a keyless split only needs the row count: read a row-aligned slot of a branch
            inputs = branches[0].row_inputs[:1] or (0,)
        return RouteStep(
            name=name,
            kind=node.kind,
            router=result.router,
            inputs=inputs,
            branches=branches,
            outputs=outputs,
            output_names=output_names,
            output_specs=result.outputs,
            timeout_s=timeout,
            recovery=recovery,
            optional=node.common.optional,
        )

    def _shadows(self, target: str) -> tuple[ShadowStep, ...]:
        """The candidates mirroring model node ``target``, in declaration order."""
        found: list[ShadowStep] = []
        for node in self.analysis.spec.nodes:
            if not isinstance(node, ShadowNode) or node.target != target:
                continue
            result = self.analysis.results.get(node.common.name)
            if result is None or result.runtime is None:
                continue
            config = ShadowConfig(
                graph=self.analysis.spec.name,
                shadow=node.common.name,
                target=target,
                rules=dict(result.rules or {}),
                sample=node.sample,
                timeout_s=node.common.timeout_s or DEFAULT_TIMEOUT_S,
            )
            names = tuple(t.name for t in result.runtime.signature.outputs)
            found.append(ShadowStep(node.common.name, target, result.runtime, names, config))
        return tuple(found)

    def _recovery(self, name: str, output_names: tuple[str, ...]) -> Recovery | None:
        """What runs when the node fails: a constant fill, or its fallback node's steps."""
        result = self.analysis.results[name]
        common = result.node.common
        if (
            common.on_error == "default"
            and common.default is not None
            and not isinstance(result.node, FeatureNode)
        ):
            return DefaultFill(common.default, tuple(result.outputs))
        if common.on_error == "fallback" and common.fallback is not None:
            step = self.step(common.fallback)
            results = tuple(self.slots.index[f"{common.fallback}.{n}"] for n in output_names)
            return Fallback(common.fallback, (step,), results)
        return None

    def _branch(self, target: str, output_names: tuple[str, ...]) -> Branch:
        step = self.step(target)
        written = set(self.writes_of(step))
        row_inputs = tuple(dict.fromkeys(s for s in self.reads_of(step) if s not in written))
        results = tuple(self.slots.index[f"{target}.{n}"] for n in output_names)
        return Branch(label=target, steps=(step,), row_inputs=row_inputs, results=results)

    def reads_of(self, step: Step) -> list[int]:
        """Every slot ``step`` reads from outside itself (a route's branches included)."""
        reads = list(step.inputs)
        if isinstance(step, RouteStep):
            for branch in step.branches:
                reads.extend(branch.row_inputs)
        if isinstance(step.recovery, Fallback):  # a fallback reads what its own steps read
            for inner in step.recovery.steps:
                reads.extend(self.reads_of(inner))
        return reads

    def writes_of(self, step: Step) -> list[int]:
        writes = list(step.outputs)
        if isinstance(step, RouteStep):
            for branch in step.branches:
                for inner in branch.steps:
                    writes.extend(self.writes_of(inner))
        if isinstance(step.recovery, Fallback):
            for inner in step.recovery.steps:
                writes.extend(self.writes_of(inner))
        return writes
