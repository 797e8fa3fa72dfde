"""What ``engine rollout status`` shows: a rollout's view with its step's numbers, as data and as text."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.serving.rollout import PAUSED, RUNNING, ArmCounts
from engine.serving.rollout_gates import Merged


def status_numbers(numbers: Merged | None) -> dict[str, Any]:
    """The current step's numbers (summed over workers) as plain data."""
    if numbers is None:
        return {}

    def arm(counts: ArmCounts) -> dict[str, Any]:
        p99 = counts.p99()
        return {
            "requests": counts.requests,
            "errors": counts.errors,
            "error_rate": round(counts.error_rate, 6),
            "p99_ms": None if p99 is None else round(p99 / 1000, 3),
        }

    found: dict[str, Any] = {"serving": arm(numbers.live), "candidate": arm(numbers.cand)}
    if numbers.shadow is not None:
        c = numbers.shadow.counters
        found["shadow"] = {
            "run": c.run,
            "errors": c.errors + c.timeouts,
            "shed": c.shed,
            "agreement": {n: o.agreement for n, o in numbers.shadow.outputs.items()},
        }
    return found


def render_status(view: Mapping[str, Any]) -> str:
    """``engine rollout status``: the plan, where it is, why, and the step's numbers."""
    if not view:
        return "no rollout"
    steps = view["steps"]
    lines = [
        f"graph {view['graph']}: serving v{view['serving']}, candidate v{view['candidate']}: "
        f"{view['status']}",
        "steps: "
        + "  ".join(
            f"[{s}]" if i + 1 == view["step"] and view["status"] in (RUNNING, PAUSED) else s
            for i, s in enumerate(steps)
        ),
        f"step {view['step']} of {len(steps)}, candidate weight {view['weight']:.0%}",
    ]
    if view.get("reason"):
        lines.append(f"reason: {view['reason']}")
    numbers = view.get("numbers") or {}
    for side in ("serving", "candidate"):
        if side in numbers:
            n = numbers[side]
            p99 = "-" if n["p99_ms"] is None else f"{n['p99_ms']:.2f} ms"
            lines.append(
                f"  {side:<9} requests {n['requests']:>6}  errors {n['errors']:>5} "
                f"({n['error_rate']:.2%})  p99 {p99}"
            )
    if "shadow" in numbers:
        s = numbers["shadow"]
        agreement = "  ".join(
            f"{k} {'-' if v is None else f'{v:.2%}'}" for k, v in sorted(s["agreement"].items())
        )
        lines.append(
            f"  shadow    run {s['run']:>6}  errors {s['errors']:>5}  shed {s['shed']}  agreement {agreement}"
        )
    lines.append("events:")
    for event in view.get("events", [])[-10:]:
        detail = f": {event['detail']}" if event.get("detail") else ""
        lines.append(f"  {event['time']}  step {event['step']}  {event['event']}{detail}")
    return "\n".join(lines)
