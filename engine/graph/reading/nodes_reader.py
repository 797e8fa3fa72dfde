"""One node's YAML -> a ``NodeSpec`` (model, transform, combine, switch, split).

Checks the kind key (exactly one), the keys each kind and op accepts, the
common keys (``timeout``, ``description``) and the shape of every value.
Argument *values* of ops are checked later by the op itself, with types known.
"""

from __future__ import annotations

from typing import Any

from engine.graph.ops.table import COMBINES, TRANSFORMS, op_table
from engine.graph.reading.batching_reader import read_batching
from engine.graph.reading.features_reader import FEATURE_KEYS, read_features
from engine.graph.reading.model_pin import MODEL_WHAT, read_pin
from engine.graph.reading.reader import Reader
from engine.graph.reading.shadow_reader import SHADOW_KEYS, read_shadow
from engine.graph.reading.source import YamlPath
from engine.graph.values.diagnostics import did_you_mean, one_of
from engine.graph.values.spec import (
    ModelInput,
    ModelNode,
    NodeCommon,
    NodeSpec,
    OpNode,
    Param,
    Ref,
    SplitArm,
    SplitNode,
    SwitchCase,
    SwitchNode,
)

KINDS = ("model", "transform", "combine", "switch", "split", "features", "shadow")
COMMON_KEYS = ("timeout", "description", "on_error", "optional")
KIND_KEYS = {
    "model": ("inputs", "threads", "execution", "batching", "sha256"),
    "switch": (),
    "split": ("key",),
    "features": FEATURE_KEYS,
    "shadow": SHADOW_KEYS,
}
EXECUTION_MODES = ("auto", "inline", "pool")


class NodeReader:
    def __init__(self, reader: Reader) -> None:
        self.r = reader
        self.blocked: set[str] = set()

    def node(self, name: str, raw: Any) -> NodeSpec | None:
        r = self.r
        path: YamlPath = ("nodes", name)
        if name == "inputs":
            r.error(r.at.key(path), "'inputs' cannot be a node name: it is how graph inputs are referenced")
        elif not r.name(name, path, "node"):
            pass
        body = r.mapping(raw, path, f"node '{name}'")
        kind = self._kind(name, body, path) if body is not None else None
        if body is None or kind is None:
            self.blocked.add(name)
            return None
        on_error, default, fallback = self._on_error(body, path, kind)
        common = NodeCommon(
            name=name,
            pos=r.at.key(path),
            kind_pos=r.at.text((*path, kind)),
            timeout_s=self._timeout(body, path),
            description=self._description(body, path),
            on_error=on_error,
            default=default,
            fallback=fallback,
            on_error_pos=r.at.value((*path, "on_error")) if "on_error" in body else None,
            optional=self._optional(body, path, kind, on_error),
        )
        if kind == "model":
            node: NodeSpec | None = self._model(common, body, path)
        elif kind in ("transform", "combine"):
            node = self._op_node(common, kind, body, path)
        elif kind == "switch":
            node = self._switch(common, body, path)
        elif kind == "features":
            self._unknown_keys(body, path, self._allowed("features"), f"features node '{name}'")
            node = read_features(r, common, body, path)
        elif kind == "shadow":
            self._unknown_keys(body, path, self._allowed("shadow"), f"shadow node '{name}'")
            node = read_shadow(r, common, body, path)
        else:
            node = self._split(common, body, path)
        if node is None:
            self.blocked.add(name)
        return node

    def _kind(self, name: str, body: dict[str, Any], path: YamlPath) -> str | None:
        r = self.r
        kinds = [k for k in body if k in KINDS]
        if "shadow" in kinds:  # a shadow's candidate is its `model:`; that is not a second kind
            kinds = [k for k in kinds if k != "model"]
        if not kinds:
            guess = next((did_you_mean(k, KINDS) for k in body if did_you_mean(k, KINDS)), "")
            r.error(r.at.key(path), f"node '{name}' has no kind: give one of {one_of(KINDS)}{guess}")
            return None
        if len(kinds) > 1:
            r.error(
                r.at.key((*path, kinds[1])),
                f"node '{name}' has both '{kinds[0]}' and '{kinds[1]}'; a node has exactly one kind",
            )
            return None
        return kinds[0]

    def _allowed(self, kind: str, op_params: frozenset[str] = frozenset()) -> tuple[str, ...]:
        extra = KIND_KEYS.get(kind, ("inputs",))
        return (kind, *COMMON_KEYS, *extra, *sorted(op_params))

    def _unknown_keys(
        self, body: dict[str, Any], path: YamlPath, allowed: tuple[str, ...], where: str
    ) -> None:
        r = self.r
        for key in body:
            if key in allowed:
                continue
            owners = [d.name for d in (*TRANSFORMS.values(), *COMBINES.values()) if key in d.params]
            hint = did_you_mean(key, allowed)
            if not hint and owners:
                hint = f" ('{key}' is an argument of {one_of(owners)})"
            r.error(
                r.at.key((*path, key)),
                f"unknown key '{key}' in {where}{hint or f' (expected {one_of(allowed)})'}",
            )

    def _timeout(self, body: dict[str, Any], path: YamlPath) -> float | None:
        if "timeout" not in body:
            return None
        return self.r.duration(body["timeout"], (*path, "timeout"), "'timeout'")

    def _on_error(
        self, body: dict[str, Any], path: YamlPath, kind: str
    ) -> tuple[str, bool | int | float | None, str | None]:
        """``on_error: fail`` (default) | ``{default: VALUE}`` | ``{fallback: NODE}``;
        a features node: ``default`` (each field's own default) | ``fail`` | ``{fallback: NODE}``."""
        if "on_error" not in body or kind == "shadow":  # a shadow's on_error is refused by its reader
            return "fail", None, None
        value = body["on_error"]
        where = self.r.at.value((*path, "on_error"))
        if value == "fail":
            return "fail", None, None
        if value == "default":
            if kind == "features":
                return "default", None, None
            self.r.error(
                where,
                "'on_error: default' needs a value here: write on_error: {default: VALUE} "
                "(only a features node uses its fields' own defaults)",
            )
            return "fail", None, None
        if kind == "features" and isinstance(value, dict) and "default" in value:
            self.r.error(
                where,
                "a features node's defaults are per field (fields: {NAME: {default: ...}}); "
                "write on_error: default",
            )
            return "fail", None, None
        if isinstance(value, dict) and len(value) == 1:
            ((key, arg),) = value.items()
            if key == "default":
                if isinstance(arg, bool | int | float):
                    return "default", arg, None
                self.r.error(
                    self.r.at.value((*path, "on_error", "default")),
                    f"on_error default must be a number or true/false, got {arg!r}",
                )
                return "fail", None, None
            if key == "fallback":
                if isinstance(arg, str) and arg:
                    return "fallback", None, arg
                self.r.error(
                    self.r.at.value((*path, "on_error", "fallback")), "on_error fallback must name a node"
                )
                return "fail", None, None
            hint = did_you_mean(str(key), ("default", "fallback"))
            self.r.error(self.r.at.key((*path, "on_error", key)), f"unknown on_error action '{key}'{hint}")
            return "fail", None, None
        self.r.error(
            where,
            f"'on_error' must be fail, {{default: VALUE}} or {{fallback: NODE}}, got {value!r}",
        )
        return "fail", None, None

    def _optional(self, body: dict[str, Any], path: YamlPath, kind: str, on_error: str) -> bool:
        """``optional: true``: when the node fails, its outputs (and what needs them) are left out."""
        if "optional" not in body:
            return False
        value = body["optional"]
        where = self.r.at.value((*path, "optional"))
        if not isinstance(value, bool):
            self.r.error(where, f"'optional' must be true or false, got {value!r}")
            return False
        if value and kind == "shadow":
            self.r.error(where, "a shadow is always off the response path; 'optional' does not apply")
            return False
        if value and on_error != "fail":
            self.r.error(
                where,
                f"'optional: true' and 'on_error: {on_error}' both say what a failure does; keep one",
            )
            return False
        return value

    def _description(self, body: dict[str, Any], path: YamlPath) -> str:
        value = body.get("description", "")
        if isinstance(value, str):
            return value
        self.r.error(self.r.at.value((*path, "description")), "'description' must be text")
        return ""

    def _refs(self, body: dict[str, Any], path: YamlPath, what: str) -> tuple[Ref, ...] | None:
        r = self.r
        value = body["inputs"]
        ipath = (*path, "inputs")
        if isinstance(value, str):
            ref = r.ref(value, ipath, what)
            return None if ref is None else (ref,)
        if not isinstance(value, list):
            r.error(r.at.value(ipath), f"{what} must be a reference or a list of references")
            return None
        refs = [r.ref(v, (*ipath, i), what) for i, v in enumerate(value)]
        return None if any(ref is None for ref in refs) else tuple(ref for ref in refs if ref is not None)

    def _model(self, common: NodeCommon, body: dict[str, Any], path: YamlPath) -> ModelNode | None:
        r = self.r
        self._unknown_keys(body, path, self._allowed("model"), f"model node '{common.name}'")
        file = r.text(body["model"], (*path, "model"), MODEL_WHAT)
        pin = read_pin(r, body, path)
        threads = body.get("threads", 1)
        if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= 256:
            r.error(
                r.at.value((*path, "threads")),
                f"'threads' must be a whole number from 1 to 256, got {threads!r}",
            )
            threads = 1
        execution = body.get("execution", "auto")
        if execution not in EXECUTION_MODES:
            hint = did_you_mean(str(execution), EXECUTION_MODES) or f" (expected {one_of(EXECUTION_MODES)})"
            r.error(r.at.value((*path, "execution")), f"unknown execution mode {execution!r}{hint}")
            execution = "auto"
        if "inputs" not in body:
            r.error(common.pos, f"model node '{common.name}' needs 'inputs' (ONNX input name: reference)")
            return None
        ipath = (*path, "inputs")
        raw = body["inputs"]
        wired: list[ModelInput] = []
        if isinstance(raw, dict):
            for onnx_name, value in raw.items():
                ref = r.ref(value, (*ipath, onnx_name), f"model input '{onnx_name}'")
                if isinstance(value, list):
                    r.error(
                        r.at.value((*ipath, onnx_name)),
                        "to feed several tensors into one model input, "
                        "join them first with a concat transform",
                    )
                if ref is not None:
                    wired.append(ModelInput(onnx_name, ref, r.at.key((*ipath, onnx_name))))
        else:
            refs = self._refs(body, path, "model 'inputs'")
            if refs is None:
                return None
            wired = [ModelInput(None, ref, ref.pos) for ref in refs]
        if file is None:
            return None
        batching = read_batching(r, body["batching"], (*path, "batching")) if "batching" in body else None
        return ModelNode(
            common, file, tuple(wired), r.at.value(ipath), threads, str(execution), batching, pin
        )

    def _op_node(self, common: NodeCommon, kind: str, body: dict[str, Any], path: YamlPath) -> OpNode | None:
        r = self.r
        table = op_table(kind)
        op = body[kind]
        if not isinstance(op, str) or op not in table:
            hint = did_you_mean(str(op), table) or f" (expected {one_of(table)})"
            r.error(common.kind_pos, f"unknown {kind} {op!r}{hint}")
            self._unknown_keys(
                body,
                path,
                self._allowed(kind, frozenset().union(*(d.params for d in table.values()))),
                f"node '{common.name}'",
            )
            return None
        definition = table[op]
        where = f"{kind} '{op}' node '{common.name}'"
        allowed = self._allowed(kind, definition.params)
        if op == "expr":
            allowed = tuple(k for k in allowed if k != "inputs")
        self._unknown_keys(body, path, allowed, where)
        params = {
            key: Param(value, r.at.text((*path, key)), r.at.key((*path, key)))
            for key, value in body.items()
            if key in definition.params
        }
        if op == "expr":
            if "expr" not in body:
                r.error(common.pos, f"node '{common.name}': transform 'expr' needs 'expr: \"...\"'")
                return None
            if r.text(body["expr"], (*path, "expr"), "'expr'") is None:
                return None
            return OpNode(common, kind, op, (), r.at.value(path), params)
        if "inputs" not in body:
            r.error(common.pos, f"{kind} node '{common.name}' needs 'inputs'")
            return None
        refs = self._refs(body, path, f"{kind} 'inputs'")
        if refs is None:
            return None
        return OpNode(common, kind, op, refs, r.at.value((*path, "inputs")), params)

    def _switch(self, common: NodeCommon, body: dict[str, Any], path: YamlPath) -> SwitchNode | None:
        r = self.r
        self._unknown_keys(body, path, self._allowed("switch"), f"switch node '{common.name}'")
        spath = (*path, "switch")
        cases_raw = body["switch"]
        if not isinstance(cases_raw, list) or not cases_raw:
            r.error(
                r.at.value(spath),
                "'switch' must be a list of {when: EXPR, to: NODE} cases ending with {default: NODE}",
            )
            return None
        cases: list[SwitchCase] = []
        for i, raw in enumerate(cases_raw):
            cpath = (*spath, i)
            case = r.mapping(raw, cpath, f"switch case {i + 1}")
            if case is None:
                continue
            r.check_keys(case, cpath, ("when", "to", "default"), f"switch case {i + 1}")
            if "default" in case:
                if "when" in case or "to" in case:
                    r.error(
                        r.at.value(cpath), "the default case has only 'default: NODE' (no 'when' or 'to')"
                    )
                if i != len(cases_raw) - 1:
                    r.error(
                        r.at.key((*cpath, "default")), "the default case must be the last case of a switch"
                    )
                target = r.text(case["default"], (*cpath, "default"), "'default'")
                if target is not None:
                    cases.append(
                        SwitchCase(
                            None, r.at.key((*cpath, "default")), target, r.at.text((*cpath, "default"))
                        )
                    )
                continue
            if "when" not in case or "to" not in case:
                missing = "when" if "when" not in case else "to"
                r.error(
                    r.at.value(cpath), f"switch case {i + 1} needs '{missing}' ({{when: EXPR, to: NODE}})"
                )
                continue
            when = r.text(case["when"], (*cpath, "when"), "'when' (a condition written as text)")
            target = r.text(case["to"], (*cpath, "to"), "'to'")
            if when is not None and target is not None:
                cases.append(SwitchCase(when, r.at.text((*cpath, "when")), target, r.at.text((*cpath, "to"))))
        if not any(c.when is None for c in cases) and cases:
            r.error(
                r.at.key(spath), "a switch needs a final {default: NODE} case for rows no condition matches"
            )
        return SwitchNode(common, tuple(cases)) if cases else None

    def _split(self, common: NodeCommon, body: dict[str, Any], path: YamlPath) -> SplitNode | None:
        r = self.r
        self._unknown_keys(body, path, self._allowed("split"), f"split node '{common.name}'")
        spath = (*path, "split")
        arms_raw = body["split"]
        if not isinstance(arms_raw, list) or not arms_raw:
            r.error(r.at.value(spath), "'split' must be a list of {to: NODE, weight: NUMBER} arms")
            return None
        arms: list[SplitArm] = []
        for i, raw in enumerate(arms_raw):
            apath = (*spath, i)
            arm = r.mapping(raw, apath, f"split arm {i + 1}")
            if arm is None:
                continue
            r.check_keys(arm, apath, ("to", "weight"), f"split arm {i + 1}")
            if "to" not in arm or "weight" not in arm:
                missing = "to" if "to" not in arm else "weight"
                r.error(
                    r.at.value(apath),
                    f"split node '{common.name}': arm {i + 1} needs '{missing}' "
                    "({to: NODE, weight: NUMBER})",
                )
                continue
            target = r.text(arm["to"], (*apath, "to"), "'to'")
            weight = arm["weight"]
            if (
                isinstance(weight, bool)
                or not isinstance(weight, int | float)
                or not 0 <= weight < float("inf")
            ):
                r.error(
                    r.at.value((*apath, "weight")),
                    f"split node '{common.name}': arm {i + 1}: 'weight' must be a number >= 0, "
                    f"got {weight!r}",
                )
                continue
            if target is not None:
                arms.append(
                    SplitArm(target, r.at.text((*apath, "to")), float(weight), r.at.value((*apath, "weight")))
                )
        if arms and sum(a.weight for a in arms) <= 0:
            r.error(
                r.at.value(spath),
                f"split node '{common.name}': the weights are all zero; at least one arm needs a "
                "positive weight",
            )
        key = r.ref(body["key"], (*path, "key"), "'key'") if "key" in body else None
        return SplitNode(common, tuple(arms), key) if arms else None
