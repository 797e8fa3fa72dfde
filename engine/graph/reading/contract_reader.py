"""``contract:`` on a graph input or a feature field -> ``Contract``, every rule checked statically.

.. code-block:: yaml

    amount:
      datatype: FP32
      shape: [-1, 1]
      contract: {range: [0, 50000], allow_nan: false, on_violation: reject}
    txn:
      datatype: FP32
      shape: [-1, 3]
      contract:
        on_violation: flag            # the default for every column below (default: reject)
        columns:                      # names the last dimension's columns, in order
          ip_risk_score: {range: [0, 1]}
          foreign_card: {values: [0, 1]}
          hour: {range: [0, 23], on_violation: reject}

Rules at the contract's top level apply to every column; a column's own rules override them.
``range`` needs a numeric datatype, ``allow_nan`` a float, ``values`` integers (or BOOL) or
BYTES; ``columns`` must name as many columns as a fixed last dimension has.
"""

from __future__ import annotations

from typing import Any

from engine.graph.reading.reader import Reader, describe
from engine.graph.reading.source import YamlPath
from engine.graph.values.contracts import ACTIONS, REJECT, ColumnRule, Contract
from engine.graph.values.diagnostics import one_of
from engine.tensors import DataType

RULE_KEYS = ("range", "allow_nan", "values", "on_violation")
CONTRACT_KEYS = (*RULE_KEYS, "columns")


def read_contract(
    r: Reader, raw: Any, path: YamlPath, tensor: str, datatype: DataType, shape: tuple[int, ...] | None
) -> Contract | None:
    """The contract at ``path`` of tensor ``tensor`` (None after reporting why it is unusable)."""
    body = r.mapping(raw, path, f"the contract of '{tensor}'")
    if body is None:
        return None
    r.check_keys(body, path, CONTRACT_KEYS, f"the contract of '{tensor}'")
    read = _rules(r, body, path, datatype, None)
    ok = read is not None
    defaults = read if read is not None else {"reject": True}
    last = shape[-1] if shape and len(shape) > 1 else 1
    if "columns" not in body:
        if not any(k in body for k in ("range", "allow_nan", "values")):
            r.error(r.at.key(path), f"the contract of '{tensor}' has no rule (range, allow_nan or values)")
            return None
        return Contract(tensor, (ColumnRule(tensor, None, **defaults),)) if ok else None
    cpath = (*path, "columns")
    columns = r.mapping(body["columns"], cpath, "'columns' (column name: rules)")
    if columns is None:
        return None
    if last == -1 and len(columns) > 1:
        r.error(r.at.key(cpath), f"'columns' needs a fixed last dimension; '{tensor}' has any size (-1)")
        return None
    if shape is not None and last != -1 and len(columns) != last:
        r.error(
            r.at.value(cpath),
            f"'columns' names {len(columns)} column(s) but '{tensor}' has {last} (its last dimension)",
        )
        return None
    rules: list[ColumnRule] = []
    for index, (name, spec) in enumerate(columns.items()):
        colpath = (*cpath, name)
        column = r.mapping(spec if spec is not None else {}, colpath, f"column '{name}'")
        if not r.name(str(name), colpath, "column") or column is None:
            ok = False
            continue
        r.check_keys(column, colpath, RULE_KEYS, f"column '{name}'")
        own = _rules(r, column, colpath, datatype, defaults)
        if own is None:
            ok = False
            continue
        rules.append(ColumnRule(f"{tensor}.{name}", index, **own))
    return Contract(tensor, tuple(rules)) if ok else None


def _rules(
    r: Reader, body: dict[str, Any], path: YamlPath, datatype: DataType, inherited: dict[str, Any] | None
) -> dict[str, Any] | None:
    """The rule keys of one mapping, on top of ``inherited``; None after an error."""
    rules: dict[str, Any] = dict(inherited) if inherited else {"reject": True}
    ok = True
    if "on_violation" in body:
        action = body["on_violation"]
        if action not in ACTIONS:
            r.error(
                r.at.text((*path, "on_violation")),
                f"'on_violation' must be {one_of(ACTIONS)}, got {describe(action)}",
            )
            ok = False
        rules["reject"] = action == REJECT
    numeric = datatype is not DataType.BYTES and datatype is not DataType.BOOL
    if "range" in body:
        value = body["range"]
        rpath = (*path, "range")
        if not numeric:
            r.error(r.at.key(rpath), f"'range' needs a numeric datatype; this tensor is {datatype.value}")
            ok = False
        elif (
            not isinstance(value, list)
            or len(value) != 2
            or not all(v is None or (isinstance(v, int | float) and not isinstance(v, bool)) for v in value)
        ):
            r.error(
                r.at.value(rpath),
                f"'range' must be [LOW, HIGH] (numbers; null for open), got {describe(value)}",
            )
            ok = False
        elif value[0] is not None and value[1] is not None and value[0] > value[1]:
            r.error(r.at.value(rpath), f"'range' [{value[0]}, {value[1]}] is empty: LOW is above HIGH")
            ok = False
        else:
            rules["low"] = None if value[0] is None else float(value[0])
            rules["high"] = None if value[1] is None else float(value[1])
    if "allow_nan" in body:
        value = body["allow_nan"]
        if not isinstance(value, bool):
            r.error(
                r.at.value((*path, "allow_nan")), f"'allow_nan' must be true or false, got {describe(value)}"
            )
            ok = False
        elif not datatype.is_float:
            r.error(
                r.at.key((*path, "allow_nan")),
                f"'allow_nan' applies to floats; this tensor is {datatype.value}",
            )
            ok = False
        else:
            rules["allow_nan"] = value
    if "values" in body:
        parsed = _values(r, body["values"], (*path, "values"), datatype)
        if parsed is None:
            ok = False
        else:
            rules["values"] = parsed
    return rules if ok else None


def _values(r: Reader, value: Any, path: YamlPath, datatype: DataType) -> tuple[Any, ...] | None:
    if not isinstance(value, list) or not value:
        r.error(r.at.value(path), f"'values' must be a non-empty list, got {describe(value)}")
        return None
    if datatype is DataType.BYTES:
        if not all(isinstance(v, str) for v in value):
            r.error(r.at.value(path), "'values' of a BYTES tensor must be text")
            return None
        return tuple(v.encode("utf-8") for v in value)
    if datatype.is_float:
        r.error(
            r.at.key(path),
            f"'values' applies to integers, BOOL and BYTES; this tensor is {datatype.value} (use range)",
        )
        return None
    if not all(isinstance(v, int) for v in value):  # bool is an int: true/false for BOOL
        r.error(r.at.value(path), f"'values' of a {datatype.value} tensor must be whole numbers")
        return None
    return tuple(int(v) for v in value)
