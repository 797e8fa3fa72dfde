"""What validation knows while it walks a graph: names, owners, results so far.

``Scope.resolve`` turns a reference into the slot it reads (``inputs.x`` or
``node.tensor``) and that slot's ``TensorSpec``, reporting unknown inputs,
nodes and tensors with suggestions. A reference to a node that already failed
(or could not be read) resolves to None *silently*: its problem was reported
once, where it is.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.graph.values.diagnostics import Pos, Report, did_you_mean
from engine.graph.values.plan import Router, RowFunction
from engine.graph.values.spec import GraphSpec, NodeSpec
from engine.interfaces import FeatureCatalog, FeatureSource, ModelRuntime
from engine.tensors import TensorSpec


@dataclass(frozen=True)
class NodeResult:
    """A checked node: the slots it reads, its outputs, and what the compiler needs to run it."""

    node: NodeSpec
    reads: tuple[str, ...]  # slot names the step reads, in the order its function takes them
    outputs: tuple[TensorSpec, ...]  # named by tensor ("prob", "output")
    detail: str
    fn: RowFunction | None = None
    runtime: ModelRuntime | None = None
    model_path: str | None = None
    router: Router | None = None
    targets: tuple[str, ...] = ()  # switch/split: branch target nodes, in branch order
    shown_inputs: tuple[str, ...] = ()  # references as resolved, for NodeInfo
    source: FeatureSource | None = None  # features nodes: the (possibly cached) source to read
    rules: Mapping[str, Any] | None = None  # shadow nodes: compare rules by output (engine.shadow.rules)


@dataclass
class Scope:
    spec: GraphSpec
    report: Report
    inputs: dict[str, TensorSpec]
    nodes: dict[str, NodeSpec]
    owner: dict[str, str] = field(default_factory=dict)  # branch target -> its switch/split
    results: dict[str, NodeResult] = field(default_factory=dict)
    failed: set[str] = field(default_factory=set)
    features: FeatureCatalog | None = None  # the server's feature sources (None: none declared)

    def output_names(self, name: str) -> list[str]:
        return [t.name for t in self.results[name].outputs] if name in self.results else []

    def resolve(self, text: str, pos: Pos, *, owner: str | None = None) -> tuple[str, TensorSpec] | None:
        """The slot ``text`` names and its spec. ``owner`` may reference its own branch targets."""
        head, _, tail = text.partition(".")
        if head == "inputs":
            if not tail:
                self.report.error(pos, "'inputs' alone is not a reference; write inputs.NAME")
                return None
            if tail in self.spec.blocked_inputs:
                return None
            if tail not in self.inputs:
                hint = did_you_mean(tail, [*self.inputs, *self.spec.blocked_inputs]) or self._input_list()
                self.report.error(pos, f"unknown graph input '{tail}'{hint}")
                return None
            return f"inputs.{tail}", self.inputs[tail]
        if head in self.spec.blocked:
            return None
        if head not in self.nodes:
            if head in self.inputs and not tail:
                self.report.error(
                    pos, f"unknown node '{head}'; did you mean the graph input 'inputs.{head}'?"
                )
            else:
                hint = did_you_mean(head, [*self.nodes, "inputs"])
                self.report.error(pos, f"unknown node '{head}'{hint}")
            return None
        if self.nodes[head].kind == "shadow":
            target = getattr(self.nodes[head], "target", "")
            self.report.error(
                pos,
                f"node '{head}' is a shadow of '{target}': its outputs never reach the graph or the response "
                f"(reference '{target}')",
            )
            return None
        route = self.owner.get(head)
        if route is not None and route != owner:
            kind = self.nodes[route].kind
            example = f"{route}.{tail}" if tail else route
            self.report.error(
                pos,
                f"node '{head}' is a branch of {kind} '{route}' and runs only on the rows routed to it; "
                f"reference the {kind} instead ('{example}')",
            )
            return None
        if head not in self.results:  # failed, or in a cycle: reported where it is
            return None
        outputs = self.results[head].outputs
        if not tail:
            if len(outputs) != 1:
                names = ", ".join(t.name for t in outputs)
                self.report.error(
                    pos,
                    f"node '{head}' has {len(outputs)} outputs ({names}); "
                    f"name one, e.g. '{head}.{outputs[0].name}'",
                )
                return None
            return f"{head}.{outputs[0].name}", outputs[0]
        found = next((t for t in outputs if t.name == tail), None)
        if found is None:
            names = ", ".join(t.name for t in outputs)
            hint = did_you_mean(tail, [t.name for t in outputs])
            self.report.error(
                pos, f"node '{head}' has no output '{tail}'{hint or f' (its outputs: {names})'}"
            )
            return None
        return f"{head}.{tail}", found

    def _input_list(self) -> str:
        return f" (graph inputs: {', '.join(self.inputs)})" if self.inputs else ""
