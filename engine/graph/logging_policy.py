"""The ``logging:`` key of a graph file: which requests the request log records, and how.

``read_logging`` turns the YAML value into a frozen ``LoggingPolicy`` (keys,
types, ranges, reference syntax; "did you mean" for unknown keys);
``check_logging_refs`` runs during validation, once every node's outputs are
known, and reports references that do not exist. Both report into the graph's
``Report`` with file:line:col, like every other check.

A policy is compiled once per graph version; per request only ``should_log``
runs (one comparison and, when sampling, one random draw).
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from engine.graph.diagnostics import Pos, did_you_mean, one_of
from engine.graph.plan import NodeInfo

if TYPE_CHECKING:
    from engine.graph.reader import Reader
    from engine.graph.scope import Scope
    from engine.graph.spec import OutputSpec

LOGGING_KEYS = ("sample", "always_on", "nodes", "redact", "hash", "max_tensor_elements")
ALWAYS_ON = ("error", "shadow_disagreement")
HASH_KEY_ENV = "ENGINE_LOG_HASH_KEY"
DEFAULT_MAX_TENSOR_ELEMENTS = 1024


@dataclass(frozen=True, slots=True)
class FieldRef:
    """One ``redact``/``hash`` entry as written: ``inputs.x``, ``outputs.y`` or ``node.tensor``."""

    text: str
    pos: Pos


@dataclass(frozen=True, slots=True)
class LoggingPolicy:
    """A graph's request-log policy; the default logs nothing.

    ``redact`` and ``hash`` hold record paths (``inputs.x``, ``outputs.y``,
    ``node.tensor``); a node output that a graph output serves is listed under
    both names, so it is hidden wherever it would appear.
    """

    sample: float = 0.0
    always_on: frozenset[str] = frozenset()
    nodes: bool = False
    redact: frozenset[str] = frozenset()
    hash: frozenset[str] = frozenset()
    max_tensor_elements: int = DEFAULT_MAX_TENSOR_ELEMENTS
    refs: tuple[FieldRef, ...] = ()  # every redact/hash entry with its position, for validation

    @property
    def enabled(self) -> bool:
        """Whether any request of this graph can be logged."""
        return self.sample > 0.0 or bool(self.always_on)

    def should_log(self, ok: bool, *, draw: float | None = None) -> str | None:
        """Why this request is logged (``"error"``, ``"sample"``), or None to skip it.

        ``draw`` is a uniform number in [0, 1); by default a fresh ``random.random()``.
        """
        if not ok and "error" in self.always_on:
            return "error"
        if self.sample <= 0.0:
            return None
        if self.sample >= 1.0:
            return "sample"
        return "sample" if (random.random() if draw is None else draw) < self.sample else None


OFF = LoggingPolicy()


def read_logging(reader: Reader, raw: Any, outputs: list[OutputSpec]) -> LoggingPolicy:
    """The policy written under ``logging:`` (``OFF`` when absent or unusable)."""
    if raw is None:
        return OFF
    top = reader.mapping(raw, ("logging",), "'logging'")
    if top is None:
        return OFF
    reader.check_keys(top, ("logging",), LOGGING_KEYS, "'logging'")
    at = reader.at
    sample = 0.0
    if "sample" in top:
        value = top["sample"]
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
            reader.error(
                at.value(("logging", "sample")),
                f"'sample' must be a number from 0 to 1 (0.1: one request in ten), got {_describe(value)}",
            )
        else:
            sample = float(value)
    always_on: set[str] = set()
    for i, item in enumerate(_list(reader, top, "always_on")):
        if item in ALWAYS_ON:
            always_on.add(item)
        else:
            hint = did_you_mean(str(item), ALWAYS_ON) or f" (expected {one_of(ALWAYS_ON)})"
            reader.error(at.value(("logging", "always_on", i)), f"unknown always_on value '{item}'{hint}")
    nodes = False
    if "nodes" in top:
        if isinstance(top["nodes"], bool):
            nodes = top["nodes"]
        else:
            reader.error(
                at.value(("logging", "nodes")),
                f"'nodes' must be true or false, got {_describe(top['nodes'])}",
            )
    limit = DEFAULT_MAX_TENSOR_ELEMENTS
    if "max_tensor_elements" in top:
        value = top["max_tensor_elements"]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            reader.error(
                at.value(("logging", "max_tensor_elements")),
                f"'max_tensor_elements' must be a positive whole number, got {_describe(value)}",
            )
        else:
            limit = value
    refs: list[FieldRef] = []
    chosen: dict[str, set[str]] = {"redact": set(), "hash": set()}
    for key in ("redact", "hash"):
        for i, item in enumerate(_list(reader, top, key)):
            pos = at.text(("logging", key, i))
            if not isinstance(item, str) or item.count(".") < 1 or item.startswith(".") or item.endswith("."):
                reader.error(
                    pos,
                    f"'{key}' entries are inputs.NAME, outputs.NAME or NODE.TENSOR, got {_describe(item)}",
                )
                continue
            other = "hash" if key == "redact" else "redact"
            if item in chosen[other]:
                reader.error(pos, f"'{item}' is both redacted and hashed; choose one")
                continue
            refs.append(FieldRef(item, pos))
            chosen[key].add(item)
    if chosen["hash"] and not os.environ.get(HASH_KEY_ENV):
        reader.error(
            at.key(("logging", "hash")),
            f"'hash' needs a secret key: set the environment variable {HASH_KEY_ENV} "
            "(values are never hashed unsalted)",
        )
    served = {o.ref.text: o.name for o in outputs}
    return LoggingPolicy(
        sample=sample,
        always_on=frozenset(always_on),
        nodes=nodes,
        redact=frozenset(_with_aliases(chosen["redact"], served)),
        hash=frozenset(_with_aliases(chosen["hash"], served)),
        max_tensor_elements=limit,
        refs=tuple(refs),
    )


def check_logging_refs(scope: Scope) -> None:
    """Report ``redact``/``hash`` entries naming an input, output or node tensor that does not exist."""
    spec = scope.spec
    outputs = [o.name for o in spec.outputs]
    for ref in spec.logging.refs:
        head, _, tail = ref.text.partition(".")
        if head == "outputs" and head not in scope.nodes:
            if tail not in outputs:
                hint = did_you_mean(tail, outputs) or f" (graph outputs: {', '.join(outputs)})"
                scope.report.error(ref.pos, f"unknown graph output '{tail}'{hint}")
        else:  # a branch node's outputs may be logged too: resolve as its own route would
            scope.resolve(ref.text, ref.pos, owner=scope.owner.get(head))


def _with_aliases(paths: set[str], served: dict[str, str]) -> set[str]:
    """``node.tensor`` also hides the graph outputs that serve it (and ``outputs.y`` its node tensor)."""
    out = set(paths)
    for text, name in served.items():
        bare = "." not in text  # ``score: model`` serves the node's only output
        if text in paths or (bare and any(p.startswith(text + ".") for p in paths)):
            out.add(f"outputs.{name}")
        if f"outputs.{name}" in paths:
            out.add(f"{text}.*" if bare else text)
    return out


def _list(reader: Reader, top: dict[str, Any], key: str) -> list[Any]:
    if key not in top:
        return []
    value = top[key]
    if not isinstance(value, list):
        reader.error(reader.at.value(("logging", key)), f"'{key}' must be a list, got {_describe(value)}")
        return []
    return value


def _describe(value: Any) -> str:
    from engine.graph.reader import describe  # reader imports spec, which imports this module

    return describe(value)


def with_derived_redactions(
    policy: LoggingPolicy, nodes: Sequence[NodeInfo], outputs: Mapping[str, str]
) -> LoggingPolicy:
    """``policy`` with redaction extended to every value computed from a protected one.

    A redacted or hashed tensor must not reappear under another name: ``concat`` copies
    it, an ``expr`` such as ``log1p`` transforms it invertibly. So every output of a
    transform or combine that reads a protected value is redacted too, as is a switch's
    or split's output when one of its branches is; the chain stops at model nodes, whose
    outputs are scores, not copies. ``outputs`` maps served output names to their
    references. Values derived from a *hashed* field are redacted (a hash of a derived
    value would be meaningless).
    """
    protected = policy.redact | policy.hash
    if not protected:
        return policy
    tainted: set[str] = set()

    def is_tainted(ref: str) -> bool:
        source = ref.split(".", 1)[0]
        return ref in protected or source in tainted or f"{source}.*" in protected

    changed = True
    while changed:
        changed = False
        for node in nodes:
            if node.name in tainted or node.kind == "model":
                continue
            if node.kind in ("switch", "split"):
                hit = any(branch in tainted for branch in node.branches)  # conditions do not flow out
            else:
                hit = any(is_tainted(ref) for ref in node.inputs)
            if hit:
                tainted.add(node.name)
                changed = True
    derived = {f"{name}.*" for name in tainted}
    derived |= {f"outputs.{name}" for name, ref in outputs.items() if is_tainted(ref)}
    if derived <= policy.redact:
        return policy
    return replace(policy, redact=policy.redact | frozenset(derived))
