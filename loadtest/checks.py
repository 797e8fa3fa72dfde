"""Assertions → checks: each one a named, self-explaining pass or fail.

Besides the SLA's own assertions there is always one more check, ``generator``:
the load generator kept its schedule (p99 send lag within ``load.max_lag``). A
run whose generator fell behind did not apply the load the SLA asked for, so it
cannot pass; the message says to add processes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from loadtest import histograms
from loadtest.metrics import evaluate
from loadtest.runner import RunResult
from loadtest.sla import Assertions, Load
from loadtest.units import format_ms


@dataclass(frozen=True)
class Check:
    """One judged assertion: its name, pass or fail, a sentence saying why, and the numbers compared."""

    name: str
    ok: bool
    message: str
    observed: object = None  # JSON-ready: a number, a dict of numbers or None
    bound: object = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def evaluate_checks(assertions: Assertions, load: Load, result: RunResult) -> list[Check]:
    checks = [_generator(load, result)]
    latency = result.ok if assertions.latency_of == "ok" else result.all
    which = "successful requests" if assertions.latency_of == "ok" else "all requests"
    for q, bound_us in sorted(assertions.latency_us.items()):
        value = histograms.percentile(latency, q)
        name = f"latency p{q:g}"
        if value is None:
            checks.append(
                Check(name, False, f"{name}: no {which} completed, nothing to measure", None, bound_us)
            )
            continue
        ok = value <= bound_us
        sign = "<=" if ok else ">"
        checks.append(
            Check(
                name, ok, f"{name} {format_ms(value)} {sign} {format_ms(bound_us)} ({which})", value, bound_us
            )
        )
    requests = result.requests
    if assertions.max_error_rate is not None:
        rate = result.errors / requests if requests else 0.0
        ok = rate <= assertions.max_error_rate
        codes = ", ".join(f"{c} {n}" for c, n in result.outcomes.most_common() if c != "OK") or "none"
        checks.append(
            Check(
                "error rate",
                ok,
                f"error rate {rate:.3%} {'<=' if ok else '>'} {assertions.max_error_rate:.3%} "
                f"({result.errors} of {requests}: {codes})",
                rate,
                assertions.max_error_rate,
            )
        )
    for code, bound in sorted(assertions.max_error_rate_by_code.items()):
        count = result.outcomes.get(code, 0)
        rate = count / requests if requests else 0.0
        ok = rate <= bound
        checks.append(
            Check(
                f"errors {code}",
                ok,
                f"{code} {rate:.3%} {'<=' if ok else '>'} {bound:.3%} ({count} of {requests})",
                rate,
                bound,
            )
        )
    if assertions.min_rate is not None:
        achieved = result.completed_ok_in_period / result.duration_s
        ok = achieved >= assertions.min_rate
        checks.append(
            Check(
                "achieved rate",
                ok,
                f"achieved {achieved:.1f} ok/s {'>=' if ok else '<'} {assertions.min_rate:g}/s",
                achieved,
                assertions.min_rate,
            )
        )
    if assertions.server and result.metrics_before is not None and result.metrics_after is not None:
        for assertion in assertions.server:
            outcome = evaluate(assertion, result.metrics_before, result.metrics_after, result.duration_s)
            checks.append(
                Check(
                    f"server {outcome.name}", outcome.ok, outcome.message, outcome.observed, assertion.bounds
                )
            )
    return checks


def _generator(load: Load, result: RunResult) -> Check:
    p99 = histograms.percentile(result.lag, 99.0) or 0.0
    bound = load.max_lag_s * 1e6
    ok = p99 <= bound
    if ok:
        message = f"generator kept the schedule: send lag p99 {format_ms(p99)} <= {format_ms(bound)}"
    else:
        message = (
            f"generator fell behind its schedule: send lag p99 {format_ms(p99)} > {format_ms(bound)}; "
            f"the load asked for was not applied (latencies include the generator's own delay). "
            f"Raise load.processes (now {load.processes}) or run the generator on another machine"
        )
    return Check("generator", ok, message, p99, bound)
