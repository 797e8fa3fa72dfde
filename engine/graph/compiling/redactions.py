"""A logging policy extended over the compiled nodes: what is computed from a protected value is protected.

Used where a served graph's request records are made: the plan's ``NodeInfo`` says which
node reads what, so redaction follows a redacted or hashed field through every copy of it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from engine.graph.values.logging_policy import LoggingPolicy
from engine.graph.values.plan import NodeInfo


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
