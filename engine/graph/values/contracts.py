"""Data contracts: the rules a graph input or a feature field promises, and their vectorised check.

A ``contract:`` on a graph input (or on a ``features`` field) is read and checked once per
version (``engine.graph.reading.contract_reader``) into one ``Contract`` per tensor: a rule per
column of its last dimension (``txn[:, 2]`` is ``txn.hour`` when the contract names its
columns), each with an optional ``range`` (inclusive), ``allow_nan`` (floats) and allowed
``values`` (integers or BYTES), and what a violation does: ``reject`` (the request fails with
INVALID_ARGUMENT naming the tensor, column, row and rule) or ``flag`` (served, counted and
recorded). ``Contract.check`` runs on a request's array with a handful of numpy operations per
column; nothing is parsed per request.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

REJECT = "reject"
FLAG = "flag"
ACTIONS = (REJECT, FLAG)


@dataclass(frozen=True, slots=True)
class Violation:
    """Rows of one tensor column that broke one rule of a request.

    ``row`` is the first such row (0-based), ``rows`` how many there were; ``value`` the first
    offending value as text (numbers only: BYTES values are not echoed)."""

    tensor: str
    column: str
    rule: str  # "range" | "allow_nan" | "values"
    row: int
    rows: int
    reject: bool
    detail: str

    @property
    def action(self) -> str:
        return REJECT if self.reject else FLAG

    def message(self) -> str:
        more = f" ({self.rows} rows in all)" if self.rows > 1 else ""
        column = "" if self.column == self.tensor else f" column '{self.column}'"
        return f"row {self.row}{column}: {self.detail} (contract rule '{self.rule}'){more}"

    def describe(self) -> str:
        """One line for the request record: ``tensor.column rule row N (M rows) action``."""
        return f"{self.column} {self.rule} row {self.row} ({self.rows} rows) {self.action}"


@dataclass(frozen=True, slots=True)
class ColumnRule:
    """One column's rules. ``index``: the column in the tensor's last dimension (None: every
    element of the row, for ``[-1]``/``[-1, 1]`` tensors and unnamed columns alike)."""

    column: str
    index: int | None
    low: float | None = None
    high: float | None = None
    allow_nan: bool = True
    values: tuple[int, ...] | tuple[bytes, ...] | None = None
    reject: bool = True

    def check(self, tensor: str, rows: np.ndarray) -> list[Violation]:
        """Violations of this rule in ``rows`` (shape ``[n, columns]``)."""
        col = rows if self.index is None else rows[:, self.index : self.index + 1]
        found: list[Violation] = []
        if col.dtype == object:
            if self.values is not None:
                allowed = set(self.values)
                bad = np.fromiter(
                    (_as_bytes(v) not in allowed for v in col.reshape(-1)), dtype=bool, count=col.size
                ).reshape(col.shape)
                self._add(found, tensor, "values", bad, col, "value not among the allowed values")
            return found
        if col.dtype.kind == "f":
            nan = np.isnan(col)
            if not self.allow_nan:
                self._add(found, tensor, "allow_nan", nan, col, "NaN where the contract allows none")
        if self.low is not None or self.high is not None:
            with np.errstate(invalid="ignore"):
                bad = np.zeros(col.shape, dtype=bool)
                if self.low is not None:
                    bad |= col < self.low
                if self.high is not None:
                    bad |= col > self.high
            self._add(
                found,
                tensor,
                "range",
                bad,
                col,
                f"outside range [{_num(self.low, '-inf')}, {_num(self.high, 'inf')}]",
            )
        if self.values is not None:
            bad = ~np.isin(col, np.asarray(self.values))
            if col.dtype.kind == "f":
                bad &= ~np.isnan(col)  # NaN is allow_nan's business
            self._add(found, tensor, "values", bad, col, "not among the allowed values")
        return found

    def _add(
        self, found: list[Violation], tensor: str, rule: str, bad: np.ndarray, col: np.ndarray, what: str
    ) -> None:
        per_row = bad.any(axis=1)
        if not per_row.any():
            return
        rows = np.flatnonzero(per_row)
        first = int(rows[0])
        value = col[first][bad[first]][0]
        detail = what if col.dtype == object else f"value {_num(value)} {what}"
        found.append(Violation(tensor, self.column, rule, first, int(rows.size), self.reject, detail))


@dataclass(frozen=True, slots=True)
class Contract:
    """Every rule of one tensor (a graph input or a feature field named ``node.field``).

    ``check`` first tests every range and NaN rule of the tensor at once (two comparisons against
    per-column bounds, one ``isnan``); only a request that breaks something is examined rule by
    rule for the message."""

    tensor: str
    rules: tuple[ColumnRule, ...]
    _fast: tuple[np.ndarray, np.ndarray, np.ndarray, bool] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        indices = [r.index for r in self.rules]
        if any(r.values is not None for r in self.rules):
            return  # membership rules: rule by rule
        if indices == [None] or indices == list(range(len(indices))):
            lows = np.array([-np.inf if r.low is None else r.low for r in self.rules])
            highs = np.array([np.inf if r.high is None else r.high for r in self.rules])
            no_nan = np.array([not r.allow_nan for r in self.rules])
            object.__setattr__(self, "_fast", (lows, highs, no_nan, bool(no_nan.any())))

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(r.column for r in self.rules)

    def check(self, array: np.ndarray) -> list[Violation]:
        """Every rule's violations in one request's ``array`` (rows in its first dimension)."""
        rows = array.reshape(array.shape[0], -1) if array.ndim else array.reshape(1, 1)
        fast = self._fast
        if fast is not None and rows.dtype != object and (fast[0].size == 1 or rows.shape[1] == fast[0].size):
            lows, highs, no_nan, any_no_nan = fast
            clean = not ((rows < lows) | (rows > highs)).any()  # NaN compares false: not out of range
            if clean and any_no_nan and rows.dtype.kind == "f":
                clean = not np.isnan(rows[:, no_nan] if no_nan.size > 1 else rows).any()
            if clean:
                return []
        found: list[Violation] = []
        for rule in self.rules:
            found.extend(rule.check(self.tensor, rows))
        return found


def _as_bytes(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8")


def _num(value: object, absent: str = "") -> str:
    if value is None:
        return absent
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return f"{value:g}" if isinstance(value, float | np.floating) else str(value)
