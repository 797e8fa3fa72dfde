"""The flood part of `make bench`: a 16x closed-loop flood against admission limits.

The server is configured for 8 calls at once (``--max-concurrency 8 --max-queue 16
--max-queue-wait 0.05``) on the one-model graph. Measured:

- ``flood-base`` at 1 and 8 callers: the unloaded p99 and the maximum goodput;
- ``flood-nogate`` at 128 callers (16x the limit): calls queue in gRPC's C core, where admission
  never sees them (grpc.aio takes calls into Python one at a time);
- ``flood-gate`` with ``--max-concurrent-rpcs`` and ``--max-pending-rpcs`` (gRPC refuses calls
  beyond them before a request is read) and a ``--health-port`` for probes, at 8 callers (the
  limit: what the gate costs callers that do not flood) and at 128;
- the ``-backoff`` rows: 128 callers that back off when refused, as gRPC's retry policy asks
  (``bench.load --refused back-off``: the server's pushback, else a jittered exponential delay);
  the other rows' callers retry at once, the harshest flood.

``report_lines`` gives the accepted p99 as a ratio to the unloaded one and the goodput as a share
of the maximum, all measured in the same run (targets: p99 <= 2x, goodput >= 0.9), and how the
refused calls were answered (gRPC's C core answers CANCELLED, with no pushback).
"""

from __future__ import annotations

from typing import Any

LIMITS = (("ENGINE_MAX_CONCURRENCY", "8"), ("ENGINE_MAX_QUEUE", "16"), ("ENGINE_MAX_QUEUE_WAIT_S", "0.05"))
FLOOD = 128
GATE = 8  # concurrent RPCs gRPC lets in: the admission limit
PENDING = 16
"""Calls gRPC's core may hold for the server to pick up (the admission queue); beyond, refused in C."""


def scenarios(scenario: Any, engine: list[str], request: Any, x: Any, health_port: int) -> list[Any]:
    mlp = request("mlp", {"x": x})
    gated = (
        *LIMITS,
        ("ENGINE_MAX_CONCURRENT_RPCS", str(GATE)),
        ("ENGINE_MAX_PENDING_RPCS", str(PENDING)),
        ("ENGINE_HEALTH_PORT", str(health_port)),
    )
    return [
        scenario(
            "flood-base",
            engine,
            mlp,
            "one-model graph, limit 8 + queue 16, unflooded",
            LIMITS,
            concurrency=(1, 8),
        ),
        scenario("flood-nogate", engine, mlp, f"the same, {FLOOD} callers", LIMITS, concurrency=(FLOOD,)),
        scenario(
            "flood-gate",
            engine,
            mlp,
            f"the same, {FLOOD} callers, --max-concurrent-rpcs {GATE}",
            gated,
            concurrency=(8, FLOOD),
        ),
        scenario(
            "flood-nogate-backoff",
            engine,
            mlp,
            f"{FLOOD} callers that back off when refused, admission only",
            LIMITS,
            concurrency=(FLOOD,),
            refused="back-off",
        ),
        scenario(
            "flood-gate-backoff",
            engine,
            mlp,
            f"{FLOOD} callers that back off when refused, --max-concurrent-rpcs {GATE}",
            gated,
            concurrency=(FLOOD,),
            refused="back-off",
        ),
    ]


def report_lines(rows: list[dict[str, Any]]) -> list[str]:
    def pick(name: str, c: int) -> dict[str, Any] | None:
        return next((r for r in rows if r["scenario"] == name and r["concurrency"] == c), None)

    one, full = pick("flood-base", 1), pick("flood-base", 8)
    if one is None or full is None:
        return []
    lines = [
        f"\nflood ({FLOOD} callers against limit 8): unloaded p99 {one['p99_ms']:.2f} ms (c=1), "
        f"{full['p99_ms']:.2f} ms (c=8); maximum goodput {full['rps']:,.0f}/s (c=8)"
    ]
    for name, c in (
        ("flood-gate", 8),
        ("flood-nogate", FLOOD),
        ("flood-gate", FLOOD),
        ("flood-nogate-backoff", FLOOD),
        ("flood-gate-backoff", FLOOD),
    ):
        flood = pick(name, c)
        if flood is None or flood["p99_ms"] is None:
            continue
        codes = ", ".join(f"{n:,} {code}" for code, n in sorted(flood.get("error_codes", {}).items()))
        lines.append(
            f"  {name} c={c}: accepted p99 {flood['p99_ms']:.2f} ms = {flood['p99_ms'] / one['p99_ms']:.2f}x "
            f"c=1 / {flood['p99_ms'] / full['p99_ms']:.2f}x c=8; goodput {flood['rps']:,.0f}/s = "
            f"{flood['rps'] / full['rps']:.2f}x the maximum; refused: {codes or 'none'}"
        )
    return lines
