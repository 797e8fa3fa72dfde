"""How the CLI prints tensors and per-node tables (``explain``, ``graph run``, ``infer``).

A node table has one row per executed node; its columns are as wide as their widest cell, so
it stays aligned whatever the names and durations (``850µs``, ``12.4ms``, ``3.02s``). A
tensor prints on one line: in full when small, else its shape, datatype and first values.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

SHOWN_VALUES = 8  # a tensor with more elements is summarised: shape, datatype, first values


@dataclass(frozen=True)
class NodeRow:
    """One executed node, as a table shows it (from an ``Explain`` answer or a local run)."""

    name: str
    kind: str
    start_ns: int
    duration_ns: int
    rows: int
    outputs: Mapping[str, np.ndarray] = field(default_factory=dict)
    branch_rows: Mapping[str, int] = field(default_factory=dict)
    feature_status: Mapping[str, str] = field(default_factory=dict)  # output -> "present,missing"
    error: str = ""
    redacted: tuple[str, ...] = ()  # outputs the graph's logging policy hides (shown as <redacted>)


def duration(ns: float) -> str:
    """``850µs``, ``12.4ms``, ``3.02s``: about three significant figures, in the unit that fits
    (one word, so the table still splits on whitespace)."""
    if ns < 1e6:
        value, unit = ns / 1e3, "µs"
    elif ns < 1e9:
        value, unit = ns / 1e6, "ms"
    else:
        value, unit = ns / 1e9, "s"
    digits = 1 if value < 100 else 0
    if unit == "s" and value < 10:
        digits = 2
    return f"{value:.{digits}f}{unit}"


def _scalar(value: object) -> str:
    if isinstance(value, bytes):
        return json.dumps(value.decode(errors="replace"))
    if isinstance(value, float | np.floating):
        return f"{float(value):.4g}"
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    return str(value)


def _nested(value: object) -> str:
    if isinstance(value, np.ndarray) and value.ndim > 0:
        return "[" + ", ".join(_nested(item) for item in value) + "]"
    return _scalar(value.item() if isinstance(value, np.ndarray | np.generic) else value)


def tensor_text(array: np.ndarray, limit: int = SHOWN_VALUES) -> str:
    """One line: ``[[0.12], [0.87]]`` when it has at most ``limit`` values, else
    ``FP32 [2, 128]: 0.1, 0.2, 0.3, … (256 values)`` (never cut in the middle of a row)."""
    if array.size <= limit:
        return _nested(array)
    from engine.tensors import DataType

    try:
        datatype = DataType.from_numpy(array.dtype).value
    except ValueError:
        datatype = str(array.dtype)
    first = ", ".join(_scalar(v) for v in array.reshape(-1)[:limit].tolist())
    shape = ", ".join(str(d) for d in array.shape)
    return f"{datatype} [{shape}]: {first}, … ({array.size} values)"


def outputs_json(outputs: Mapping[str, np.ndarray]) -> str:
    """A JSON object with one output per line, each array on that one line."""
    lines = [f"  {json.dumps(name)}: {json.dumps(jsonable(a))}" for name, a in outputs.items()]
    return "{\n" + ",\n".join(lines) + "\n}" if lines else "{}"


def jsonable(array: np.ndarray) -> object:
    """Nested lists for JSON; BYTES elements as text."""
    if array.dtype == object:
        flat = [v.decode(errors="replace") if isinstance(v, bytes) else v for v in array.reshape(-1)]
        return np.array(flat, dtype=object).reshape(array.shape).tolist()
    if array.dtype in (np.float16, np.float32):  # their shortest decimal text, not float64 noise
        return array.astype(str).astype(np.float64).tolist()
    return array.tolist()


def node_table(rows: Sequence[NodeRow]) -> str:
    """The per-node table: node, kind, start, took, rows, then outputs / branch rows / error."""
    header = ("node", "kind", "start", "took", "rows", "outputs / branch")
    cells = [header]
    for row in rows:
        shown = []
        if row.branch_rows:
            shown.append(", ".join(f"{k}: {v} row(s)" for k, v in sorted(row.branch_rows.items())))
        for name, values in row.outputs.items():
            status = row.feature_status.get(name)
            why = f" ({status})" if status else ""  # a features node: where the values came from
            shown.append(f"{name}={tensor_text(values)}{why}")
        shown.extend(f"{name}=<redacted>" for name in row.redacted)
        if row.error:
            shown.append(f"ERROR {row.error}")
        cells.append(
            (
                row.name,
                row.kind,
                duration(row.start_ns),
                duration(row.duration_ns),
                str(row.rows),
                "; ".join(shown).replace("\n", " "),
            )
        )
    widths = [max(len(c[i]) for c in cells) for i in range(5)]
    lines = []
    for c in cells:
        left = f"{c[0]:<{widths[0]}}  {c[1]:<{widths[1]}}"
        right = f"{c[2]:>{widths[2]}}  {c[3]:>{widths[3]}}  {c[4]:>{widths[4]}}"
        lines.append(f"{left}  {right}  {c[5]}".rstrip())
    return "\n".join(lines)
