"""Check one node against what it reads: model wiring, ops, expressions.

Each ``check_*`` resolves every reference first (so all unknown names are
reported), then checks types and returns a ``NodeResult`` or None. Switch and
split nodes are checked in ``engine.graph.checking.route_checks``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from engine.graph.checking.model_files import ModelFiles
from engine.graph.checking.scope import NodeResult, Scope
from engine.graph.ops.call import OpCall
from engine.graph.ops.combines import weights_param
from engine.graph.ops.expression_eval import CompiledExpr, compile_expression
from engine.graph.ops.expressions import ExprError, parse, references
from engine.graph.ops.table import build_op
from engine.graph.values.diagnostics import Pos, did_you_mean
from engine.graph.values.spec import ModelInput, ModelNode, OpNode
from engine.tensors import TensorSpec


def _typed(spec: TensorSpec) -> str:
    return f"{spec.datatype.value} {spec.shape_text()}"


def check_model(scope: Scope, node: ModelNode, files: ModelFiles) -> NodeResult | None:
    resolved = [scope.resolve(w.ref.text, w.ref.pos) for w in node.inputs]
    loaded = files.load(node)
    if loaded is None:
        return None
    relative, runtime = loaded
    signature = runtime.signature
    listing = ", ".join(f"{t.name} ({_typed(t)})" for t in signature.inputs)
    wired: dict[str, tuple[ModelInput, tuple[str, TensorSpec] | None]] = {}
    ok = True
    if node.inputs and node.inputs[0].onnx_name is None:
        if len(node.inputs) != len(signature.inputs):
            scope.report.error(
                node.inputs_pos,
                f"model '{relative}' has {len(signature.inputs)} input(s) ({listing}) but "
                f"{len(node.inputs)} reference(s) are given; list one per model input, in order",
            )
            return None
        wired = {t.name: (w, r) for t, w, r in zip(signature.inputs, node.inputs, resolved, strict=True)}
    else:
        suggested: set[str] = set()
        for w, r in zip(node.inputs, resolved, strict=True):
            assert w.onnx_name is not None
            if signature.input(w.onnx_name) is None:
                unwired = [
                    t.name for t in signature.inputs if t.name not in {x.onnx_name for x in node.inputs}
                ]
                hint = did_you_mean(w.onnx_name, unwired)
                suggested.update(n for n in unwired if f"'{n}'" in hint)
                scope.report.error(
                    w.key_pos,
                    f"model '{relative}' has no input '{w.onnx_name}'{hint or f' (its inputs: {listing})'}",
                )
                ok = False
            wired[w.onnx_name] = (w, r)
        for t in signature.inputs:
            if t.name not in wired and t.name not in suggested:
                scope.report.error(
                    node.inputs_pos,
                    f"input '{t.name}' ({_typed(t)}) of model '{relative}' is not wired; add '{t.name}: REF' "
                    "under 'inputs'",
                )
                ok = False
    if not ok or any(r is None for _, r in wired.values()):
        return None
    reads: list[str] = []
    for want in signature.inputs:
        w, r = wired[want.name]
        assert r is not None
        ok = check_wire(scope, relative, want, w.ref.text, w.ref.pos, r[1]) and ok
        reads.append(r[0])
    if not ok:
        return None
    return NodeResult(
        node=node,
        reads=tuple(reads),
        outputs=signature.outputs,
        detail=relative,
        runtime=runtime,
        model_path=relative,
        shown_inputs=tuple(reads),
    )


def check_wire(scope: Scope, model: str, want: TensorSpec, text: str, pos: Pos, got: TensorSpec) -> bool:
    lead = f"model '{model}' input '{want.name}' expects {_typed(want)}, but '{text}' is {_typed(got)}"
    if got.datatype is not want.datatype:
        scope.report.error(pos, f"{lead}: datatypes differ (add a cast transform)")
        return False
    if len(got.shape) != len(want.shape):
        scope.report.error(pos, f"{lead}: ranks differ (add a reshape transform)")
        return False
    for i, (w, g) in enumerate(zip(want.shape, got.shape, strict=True)):
        if w != -1 and g != -1 and w != g:
            scope.report.error(pos, f"{lead}: dimension {i} is {g}, the model needs {w}")
            return False
    return True


def _op_detail(node: OpNode) -> str:
    if node.op == "expr":
        return str(node.params["expr"].value)
    args = ", ".join(f"{k}={v.value}" for k, v in node.params.items())
    return f"{node.op}({args})" if args else node.op


def check_op(scope: Scope, node: OpNode) -> NodeResult | None:
    if node.op == "expr":
        param = node.params["expr"]
        compiled = compile_text(scope, str(param.value), param.pos, f"node '{node.common.name}'")
        if compiled is None:
            return None
        expr, reads = compiled
        output = TensorSpec("output", expr.datatype, expr.shape)

        def run(
            arrays: Sequence[np.ndarray], _fn: Callable[[Sequence[np.ndarray]], Any] = expr.fn
        ) -> tuple[Any]:
            return (_fn(arrays),)

        return NodeResult(node, reads, (output,), _op_detail(node), fn=run, shown_inputs=reads)
    resolved = [scope.resolve(ref.text, ref.pos) for ref in node.inputs]
    if any(r is None for r in resolved):
        _check_params_alone(scope, node)
        return None
    specs = tuple(
        TensorSpec(ref.text, r[1].datatype, r[1].shape)
        for ref, r in zip(node.inputs, resolved, strict=True)
        if r
    )
    call = OpCall(
        node=node.common.name,
        kind=node.kind,
        op=node.op,
        inputs=specs,
        input_pos=tuple(ref.pos for ref in node.inputs),
        params=node.params,
        pos=node.common.kind_pos,
        report=scope.report,
    )
    built = build_op(call)
    if built is None:
        return None
    reads = tuple(r[0] for r in resolved if r)
    output = TensorSpec("output", built.datatype, built.shape)
    return NodeResult(node, reads, (output,), _op_detail(node), fn=built.fn, shown_inputs=reads)


def _check_params_alone(scope: Scope, node: OpNode) -> None:
    """Check argument values that need no input types, when the inputs could not be resolved."""
    call = OpCall(
        node.common.name, node.kind, node.op, (), (), node.params, node.common.kind_pos, scope.report
    )
    for name in node.params:
        if name in ("axis", "start", "stop"):
            call.int_param(name)
        elif name == "value":
            call.number_param(name)
        elif name == "to":
            call.datatype_param(name)
    if node.op == "weighted_mean":  # its count is that of the references written, resolved or not
        weights_param(call, len(node.inputs))


def compile_text(
    scope: Scope, text: str, pos: Pos, where: str
) -> tuple[CompiledExpr, tuple[str, ...]] | None:
    """Parse, resolve and compile an expression written at ``pos``; the slots it reads in order."""
    try:
        tree = parse(text)
    except ExprError as exc:
        scope.report.error(pos.shifted(exc.col - 1), f"{where}: expression: {exc.message}")
        return None
    slots: dict[str, tuple[str, TensorSpec]] = {}
    ok = True
    for name in references(tree):
        if name.text in slots:
            continue
        at = pos.shifted(name.col - 1)
        text_ref = name.text
        if "." not in text_ref and text_ref not in scope.nodes and text_ref not in scope.spec.blocked:
            if text_ref in scope.spec.blocked_inputs:
                ok = False
                continue
            if text_ref in scope.inputs:
                text_ref = f"inputs.{text_ref}"
            else:
                hint = did_you_mean(text_ref, [*scope.nodes, *scope.inputs])
                scope.report.error(at, f"{where}: expression: unknown name '{name.text}'{hint}")
                ok = False
                continue
        resolved = scope.resolve(text_ref, at)
        if resolved is None:
            ok = False
            continue
        slots[name.text] = resolved
    if not ok:
        return None
    try:
        compiled = compile_expression(tree, {k: v[1] for k, v in slots.items()})
    except ExprError as exc:
        scope.report.error(pos.shifted(exc.col - 1), f"{where}: expression: {exc.message}")
        return None
    return compiled, tuple(slots[n][0] for n in compiled.names)
