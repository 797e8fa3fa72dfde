"""``rollout:``: the plan by which a new version replaces the serving one (docs/rollouts.md).

    rollout:
      steps:
        - shadow: {requests: 200}             # mirrored to the candidate, compared, not served
        - canary: {weight: 0.05, requests: 300}
        - promote
      gates: {max_error_rate_increase: 0.01, max_p99_ratio: 2.0, min_agreement: {y: 0.95}, min_requests: 50}
      compare: {y: {abs_tol: 0.01}}           # the shadow steps' rules (default: by dtype)
      sticky: inputs.user_id                  # one key, one arm (default: by request id)

Every problem is reported with its position; a plan with any problem is left out.
"""

from __future__ import annotations

from typing import Any

from engine.graph.reading.reader import Reader, describe
from engine.graph.reading.shadow_reader import compare_rules
from engine.graph.reading.source import YamlPath
from engine.graph.values.diagnostics import did_you_mean, one_of
from engine.graph.values.spec import RolloutGates, RolloutSpec, RolloutStep

ROLLOUT_KEYS = ("steps", "gates", "compare", "sticky")
STEP_KINDS = ("shadow", "canary", "promote")
SHADOW_STEP_KEYS = ("requests", "duration")
CANARY_STEP_KEYS = ("weight", "requests", "duration")
GATE_KEYS = ("max_error_rate_increase", "max_p99_ratio", "min_agreement", "min_requests")


def read_rollout(reader: Reader, raw: Any, outputs: list[str], inputs: list[str]) -> RolloutSpec | None:
    """``rollout:`` of a graph whose served outputs are ``outputs`` and inputs ``inputs``."""
    path: YamlPath = ("rollout",)
    body = reader.mapping(
        raw, path, "'rollout' (e.g. {steps: [{canary: {weight: 0.1, requests: 100}}, promote]})"
    )
    if body is None:
        return None
    reader.check_keys(body, path, ROLLOUT_KEYS, "'rollout'")
    problems = len(reader.report.items)
    steps = _steps(reader, body, path)
    steps_read = len(reader.report.items) == problems
    gates = _gates(reader, body.get("gates"), (*path, "gates"), outputs)
    compare, _ = compare_rules(reader, body, path, outputs, "rollout")
    if steps_read and gates.min_agreement and not any(s.kind == "shadow" for s in steps):
        reader.error(
            reader.at.key((*path, "gates", "min_agreement")),
            "'min_agreement' is measured in a shadow step; add '- shadow: {requests: N}' to 'steps'",
        )
    sticky = _sticky(reader, body, path, inputs) if "sticky" in body else ""
    if len(reader.report.items) > problems:
        return None
    return RolloutSpec(tuple(steps), gates, compare, sticky, reader.at.key(path))


def _sticky(reader: Reader, body: dict[str, Any], path: YamlPath, inputs: list[str]) -> str:
    """``sticky: inputs.NAME``: the graph input whose (first) value picks a request's arm."""
    spath = (*path, "sticky")
    value = body["sticky"]
    name = value[len("inputs.") :] if isinstance(value, str) and value.startswith("inputs.") else None
    if name is None:
        reader.error(
            reader.at.value(spath), f"'sticky' must name a graph input as inputs.NAME, got {describe(value)}"
        )
        return ""
    if name not in inputs:
        hint = did_you_mean(name, inputs) or f" (inputs: {', '.join(inputs)})"
        reader.error(reader.at.value(spath), f"'sticky' names input '{name}', not declared{hint}")
        return ""
    return name


def _steps(reader: Reader, body: dict[str, Any], path: YamlPath) -> list[RolloutStep]:
    spath = (*path, "steps")
    raw = body.get("steps")
    if not isinstance(raw, list) or not raw:
        where = reader.at.value(spath) if "steps" in body else reader.at.key(path)
        reader.error(
            where, "'rollout' needs 'steps', a list such as [{canary: {weight: 0.1, requests: 100}}, promote]"
        )
        return []
    steps: list[RolloutStep] = []
    for i, item in enumerate(raw):
        ipath = (*spath, i)
        kind, args = (item, None) if isinstance(item, str) else _single(reader, item, ipath)
        if kind is None:
            continue
        if kind not in STEP_KINDS:
            hint = did_you_mean(kind, STEP_KINDS) or f" (steps: {one_of(STEP_KINDS)})"
            reader.error(
                reader.at.value(ipath) if isinstance(item, str) else reader.at.key((*ipath, kind)),
                f"unknown rollout step '{kind}'{hint}",
            )
            continue
        last = i == len(raw) - 1
        if kind == "promote":
            if args is not None:
                reader.error(reader.at.value((*ipath, kind)), "'promote' takes nothing; write '- promote'")
            elif not last:
                reader.error(reader.at.value(ipath), "'promote' must be the last step")
            else:
                steps.append(RolloutStep("promote", 1.0, 0, reader.at.value(ipath)))
            continue
        step = _step(reader, kind, args, (*ipath, kind))
        if step is not None:
            steps.append(step)
    if not (isinstance(raw[-1], str) and raw[-1] == "promote"):
        reader.error(reader.at.value((*spath, len(raw) - 1)), "the last rollout step must be 'promote'")
    return steps


def _single(reader: Reader, item: Any, path: YamlPath) -> tuple[str | None, Any]:
    if not isinstance(item, dict) or len(item) != 1:
        reader.error(
            reader.at.value(path),
            "a rollout step is 'promote' or one of {shadow: {requests: N}}, "
            f"{{canary: {{weight: W, requests: N}}}}, got {describe(item)}",
        )
        return None, None
    ((kind, args),) = item.items()
    return str(kind), args


def _step(reader: Reader, kind: str, args: Any, path: YamlPath) -> RolloutStep | None:
    keys = SHADOW_STEP_KEYS if kind == "shadow" else CANARY_STEP_KEYS
    body = reader.mapping(args, path, f"'{kind}' (e.g. {{{', '.join(f'{k}: ...' for k in keys)}}})")
    if body is None:
        return None
    reader.check_keys(body, path, keys, f"'{kind}'")
    ok = True
    requests = body.get("requests", 0)
    if "requests" not in body and "duration" not in body:
        reader.error(
            reader.at.key(path),
            f"'{kind}' needs 'requests' (a positive whole number) or 'duration' (e.g. 10m)",
        )
        ok = False
    elif "requests" in body and (isinstance(requests, bool) or not isinstance(requests, int) or requests < 1):
        where = reader.at.value((*path, "requests"))
        reader.error(where, f"'{kind}' needs 'requests', a positive whole number, got {describe(requests)}")
        ok = False
    duration = 0.0
    if "duration" in body:
        duration = reader.duration(body["duration"], (*path, "duration"), "'duration'") or 0.0
        ok = ok and duration > 0
    weight = 0.0
    if kind == "canary":
        raw = body.get("weight")
        if isinstance(raw, bool) or not isinstance(raw, int | float) or not 0.0 < raw <= 1.0:
            where = reader.at.value((*path, "weight")) if "weight" in body else reader.at.key(path)
            reader.error(
                where,
                "'canary' needs 'weight', a share of requests greater than 0 and at most 1, "
                f"got {describe(raw)}",
            )
            ok = False
        else:
            weight = float(raw)
    if not ok:
        return None
    assert isinstance(requests, int)
    return RolloutStep(kind, weight, requests, reader.at.key(path), duration)


def _gates(reader: Reader, raw: Any, path: YamlPath, outputs: list[str]) -> RolloutGates:
    if raw is None:
        return RolloutGates()
    body = reader.mapping(raw, path, "'gates'")
    if body is None:
        return RolloutGates()
    reader.check_keys(body, path, GATE_KEYS, "'gates'")
    error_rate = _number(reader, body, path, "max_error_rate_increase", 0.0, 1.0)
    p99 = _number(reader, body, path, "max_p99_ratio", 0.0, None)
    min_requests = body.get("min_requests", 1)
    if isinstance(min_requests, bool) or not isinstance(min_requests, int) or min_requests < 1:
        reader.error(
            reader.at.value((*path, "min_requests")),
            f"'min_requests' must be a positive whole number, got {describe(min_requests)}",
        )
        min_requests = 1
    agreement: dict[str, float] = {}
    apath = (*path, "min_agreement")
    raw_agreement = body.get("min_agreement")
    if raw_agreement is not None and (
        shares := reader.mapping(raw_agreement, apath, "'min_agreement' (e.g. {y: 0.95})")
    ):
        for name, share in shares.items():
            if name not in outputs:
                hint = did_you_mean(str(name), outputs) or f" (outputs: {', '.join(outputs)})"
                reader.error(
                    reader.at.key((*apath, name)), f"'min_agreement' names output '{name}', not served{hint}"
                )
            elif isinstance(share, bool) or not isinstance(share, int | float) or not 0.0 <= share <= 1.0:
                reader.error(
                    reader.at.value((*apath, name)),
                    f"'min_agreement' of '{name}' must be a share of rows from 0 to 1, got {describe(share)}",
                )
            else:
                agreement[str(name)] = float(share)
    return RolloutGates(error_rate, p99, agreement, min_requests)


def _number(
    reader: Reader, body: dict[str, Any], path: YamlPath, key: str, low: float, high: float | None
) -> float | None:
    if key not in body:
        return None
    value = body[key]
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or value < low
        or (high is not None and value > high)
        or (key == "max_p99_ratio" and value <= 0)
    ):
        bounds = f"from {low:g} to {high:g}" if high is not None else "greater than 0"
        reader.error(
            reader.at.value((*path, key)), f"'{key}' must be a number {bounds}, got {describe(value)}"
        )
        return None
    return float(value)
