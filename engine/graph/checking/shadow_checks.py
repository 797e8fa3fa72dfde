"""Check a ``shadow:`` node: its target, its candidate model, and what is compared.

The target must be a model node. The candidate is loaded as a shadow (never inline, in
the runtimes' shadow pool) and is fed exactly the target's inputs, in the target model's
input order: it needs as many inputs, each with the same datatype and rank and no
conflicting fixed dimension. The compared outputs (the ``compare:`` keys, or every output
name both models have) must exist in both, with the same datatype. A shadow has no
outputs in the graph: nothing may reference it, and it is not "unused".
"""

from __future__ import annotations

from dataclasses import replace

from engine.graph.checking.model_files import ModelFiles
from engine.graph.checking.node_checks import check_wire
from engine.graph.checking.scope import NodeResult, Scope
from engine.graph.reading.shadow_reader import DEFAULT_TIMEOUT_S
from engine.graph.values.diagnostics import did_you_mean
from engine.graph.values.spec import ModelNode, ShadowNode
from engine.shadow.rules import parse_rules


def check_shadow(scope: Scope, node: ShadowNode, files: ModelFiles) -> NodeResult | None:
    report = scope.report
    name = node.common.name
    target = scope.nodes.get(node.target)
    if target is None:
        if node.target not in scope.spec.blocked:
            hint = did_you_mean(node.target, [n for n, s in scope.nodes.items() if s.kind == "model"])
            report.error(node.target_pos, f"shadow '{name}': unknown node '{node.target}'{hint}")
        return None
    if not isinstance(target, ModelNode):
        report.error(
            node.target_pos,
            f"shadow '{name}' mirrors '{node.target}', a {target.kind} node; a shadow mirrors a model node "
            "(to mirror a whole graph, give the candidate graph 'shadow_of: GRAPH')",
        )
        return None
    live = scope.results.get(node.target)
    candidate = ModelNode(
        replace(node.common, kind_pos=node.model_pos),
        node.path,
        target.inputs,
        node.model_pos,
        threads=node.threads,
        execution="pool",
        sha256=node.sha256,
    )
    loaded = files.load(candidate, shadow=True)
    if live is None or loaded is None or live.runtime is None:
        return None
    relative, runtime = loaded
    mine, theirs = runtime.signature, live.runtime.signature
    if len(mine.inputs) != len(theirs.inputs):
        report.error(
            node.model_pos,
            f"shadow '{name}': candidate '{relative}' takes {len(mine.inputs)} input(s) but '{node.target}' "
            f"feeds its model {len(theirs.inputs)}; a candidate gets exactly the target's inputs",
        )
        return None
    ok = all(
        check_wire(scope, relative, want, f"{node.target}'s input '{got.name}'", node.model_pos, got)
        for want, got in zip(mine.inputs, theirs.inputs, strict=True)
    )
    live_out = {t.name: t for t in live.outputs}
    cand_out = {t.name: t for t in mine.outputs}
    if node.compare:
        names = list(node.compare)
        for out in names:
            pos = node.compare_pos.get(out, node.common.pos)
            for side, outputs, who in (
                (live_out, live_out, f"'{node.target}'"),
                (cand_out, cand_out, f"'{relative}'"),
            ):
                if out not in side:
                    hint = did_you_mean(out, list(outputs)) or f" (its outputs: {', '.join(outputs)})"
                    report.error(pos, f"shadow '{name}': {who} has no output '{out}'{hint}")
                    ok = False
    else:
        names = [n for n in live_out if n in cand_out]
        if not names:
            report.error(
                node.model_pos,
                f"shadow '{name}': candidate '{relative}' has no output named like one of '{node.target}'s "
                f"({', '.join(live_out)}); name them alike or list what to compare under 'compare'",
            )
            return None
    for out in names:
        if out in live_out and out in cand_out and live_out[out].datatype is not cand_out[out].datatype:
            report.error(
                node.compare_pos.get(out, node.model_pos),
                f"shadow '{name}': output '{out}' is {cand_out[out].datatype.value} in '{relative}' but "
                f"{live_out[out].datatype.value} in '{node.target}'",
            )
            ok = False
    if not ok:
        return None
    try:
        rules = parse_rules(node.compare, outputs=names) if node.compare else {}
    except ValueError:  # its problems were reported where the reader found them
        return None
    timeout = node.common.timeout_s or DEFAULT_TIMEOUT_S
    return NodeResult(
        node=node,
        reads=live.reads,
        outputs=(),
        detail=f"shadow of {node.target}: {relative} (sample {node.sample:g}, timeout {timeout * 1000:g} ms)",
        runtime=runtime,
        model_path=relative,
        shown_inputs=live.shown_inputs,
        rules=rules,
    )
