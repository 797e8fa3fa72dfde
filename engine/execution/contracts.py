"""Enforcing data contracts on a request's arrays: count every violation, flag or reject.

The core calls ``enforce`` on the decoded graph inputs that carry a ``contract:`` (before the
plan runs) and the runner on a ``features`` node's fetched fields. Every violation is counted
in the graph's statistics (rows, by tensor, column, rule and action: what
``engine_contract_violations_total`` exports); a ``flag`` violation is kept in ``flags`` for the
request's record and the request is served; the first ``reject`` violation fails the request
with ``ContractViolation`` (INVALID_ARGUMENT naming the tensor, column, row and rule).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from engine.errors import ContractViolation
from engine.execution.stats import GraphStats
from engine.graph.values.contracts import Contract, Violation


def enforce(
    checks: Sequence[tuple[Contract, np.ndarray | None]], stats: GraphStats, flags: list[Violation] | None
) -> None:
    """Check each array against its contract (absent arrays are skipped)."""
    rejected: Violation | None = None
    for contract, array in checks:
        if array is None:
            continue
        for violation in contract.check(array):
            stats.count_violation(
                violation.tensor, violation.column, violation.rule, violation.action, violation.rows
            )
            if violation.reject:
                rejected = rejected or violation
            elif flags is not None:
                flags.append(violation)
    if rejected is not None:
        raise ContractViolation(
            rejected.tensor, rejected.column, rejected.row, rejected.rule, rejected.message()
        )
