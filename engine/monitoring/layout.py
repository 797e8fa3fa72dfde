"""Which columns of a compiled plan are monitored, by name, and where each lives in its slots.

    graph input          amount, txn.hour (a contract's column name) or txn[2]
    features field       user.account_age_days
    model node output    ip_risk.prob (ip_risk.probs[1] for a multi-column output)
    served output        outputs.score

Transforms and combines are left out (they are functions of the columns above), and so are
shadow candidates (their numbers are in the shadow report). A tensor's columns are those of its
last dimension, at most ``MAX_COLUMNS`` of them.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.graph.values.plan import Plan

MAX_COLUMNS = 16
MONITORED_KINDS = ("features", "model")


@dataclass(frozen=True, slots=True)
class TapColumn:
    """Column ``name`` is ``values[slot][:, index]`` (``index`` None: every element of each row)."""

    name: str
    slot: int
    index: int | None


def plan_columns(plan: Plan) -> list[TapColumn]:
    """Every monitored column of ``plan``, in slot order."""
    columns: list[TapColumn] = []
    contracts = dict(plan.contracts)
    for slot, spec in enumerate(plan.inputs):
        contract = contracts.get(slot)
        if contract is not None and len(contract.rules) > 1:
            columns.extend(TapColumn(rule.column, slot, rule.index) for rule in contract.rules)
        else:
            columns.extend(_columns(spec.name, slot, spec.shape))
    index = {name: i for i, name in enumerate(plan.slot_names)}
    for node in plan.nodes:
        if node.kind not in MONITORED_KINDS:
            continue
        for tensor in node.outputs:
            found = index.get(f"{node.name}.{tensor.name}")
            if found is not None:
                columns.extend(_columns(f"{node.name}.{tensor.name}", found, tensor.shape))
    for spec, slot in zip(plan.outputs, plan.output_slots, strict=True):
        columns.extend(_columns(f"outputs.{spec.name}", slot, spec.shape))
    return columns


def _columns(name: str, slot: int, shape: tuple[int, ...]) -> list[TapColumn]:
    last = shape[-1] if len(shape) > 1 else 1
    if last in (1, -1) or len(shape) > 2:
        return [TapColumn(name, slot, None)]
    return [TapColumn(f"{name}[{j}]", slot, j) for j in range(min(last, MAX_COLUMNS))]
