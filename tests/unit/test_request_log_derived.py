"""Redaction follows values through nodes that copy or transform them, and stops at models."""

from __future__ import annotations

from engine.graph.compiling.redactions import with_derived_redactions
from engine.graph.values.logging_policy import LoggingPolicy
from engine.graph.values.plan import NodeInfo


def _node(name: str, kind: str, inputs: tuple[str, ...], branches: tuple[str, ...] = ()) -> NodeInfo:
    return NodeInfo(name=name, kind=kind, detail="", inputs=inputs, outputs=(), branches=branches)


NODES = (
    _node("scaled", "transform", ("inputs.amount",)),  # expr: an invertible function of a protected value
    _node("x", "transform", ("scaled", "inputs.features")),  # concat: copies it
    _node("risk", "model", ("x",)),  # a score: not a copy
    _node("copy", "transform", ("inputs.country",)),
    _node("route", "switch", ("inputs.amount",), branches=("a", "b")),  # the condition reads amount
    _node("a", "model", ("x",)),
    _node("b", "model", ("x",)),
    _node("passthrough", "switch", ("risk",), branches=("copy", "a")),
    _node("score", "combine", ("risk", "route")),
)
OUTPUTS = {"score": "score", "features_echo": "x", "route": "route.prob"}


def test_copies_and_transforms_of_protected_values_are_redacted() -> None:
    policy = LoggingPolicy(
        sample=1.0, redact=frozenset({"inputs.amount"}), hash=frozenset({"inputs.country"})
    )
    derived = with_derived_redactions(policy, NODES, OUTPUTS)
    assert {"scaled.*", "x.*", "copy.*", "passthrough.*", "outputs.features_echo"} <= derived.redact
    # models stop the chain; a switch whose condition reads a protected value does not leak it
    assert (
        not {"risk.*", "a.*", "b.*", "route.*", "score.*", "outputs.score", "outputs.route"} & derived.redact
    )
    assert derived.hash == policy.hash and derived.sample == 1.0


def test_nothing_protected_leaves_the_policy_as_is() -> None:
    policy = LoggingPolicy(sample=0.5)
    assert with_derived_redactions(policy, NODES, OUTPUTS) is policy
