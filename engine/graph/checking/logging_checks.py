"""The ``logging:`` references checked against the graph: every ``redact``/``hash`` entry must exist.

Runs during validation, once every node's outputs are known; a problem is reported at the
entry's position, with a suggestion, like every other check.
"""

from __future__ import annotations

from engine.graph.checking.scope import Scope
from engine.graph.values.diagnostics import did_you_mean


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
