"""Compare rules: how one shadow output is compared with its live counterpart, parsed from plain data.

A graph's ``compare:`` mapping names outputs; each value is a rule mapping, a kind
name as shorthand (``decision: class``) or empty (``prob: {}``, the numeric default)::

    compare:
      prob:     {abs_tol: 0.05, rel_tol: 0.1}    # numeric (the default kind)
      decision: {kind: class, max_classes: 16}   # agreement + confusion matrix
      score:    {kind: score, window: 1000}      # numeric + Spearman over the last 1000 rows

Kinds (semantics in ``docs/shadows.md``):

* ``numeric``: a row agrees when every element has ``|shadow - live| <= max(abs_tol,
  rel_tol * max(|shadow|, |live|))`` (``math.isclose``). Keys ``abs_tol`` (default 1e-6),
  ``rel_tol`` (default 0).
* ``class``: a row agrees when its class is equal. A floating-point output with more than
  one element per row is a probability vector: its class is the argmax of the row. Any
  other row is its own class (a single element, or the whole row). Key ``max_classes``
  (default 32): classes seen after the first ``max_classes`` share the ``(other)`` bucket.
* ``score``: ``numeric`` plus the Spearman rank correlation of one element per row over the
  last ``window`` rows (default 1000). Key ``column`` (default -1: the row's last element,
  which is P(positive) for a ``[-1, 2]`` probability output).

``rule_problems`` reports every mistake as ``(key path, message)`` so the graph layer can
turn each into a file:line diagnostic; ``parse_rules`` returns the rules or raises.
"""

from __future__ import annotations

import difflib
import enum
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

Path = tuple[str, ...]
Problem = tuple[Path, str]


class CompareKind(enum.Enum):
    NUMERIC = "numeric"
    CLASS = "class"
    SCORE = "score"


@dataclass(frozen=True, slots=True)
class CompareRule:
    """How one output is compared. Fields not used by ``kind`` keep their defaults."""

    kind: CompareKind = CompareKind.NUMERIC
    abs_tol: float = 1e-6
    rel_tol: float = 0.0
    max_classes: int = 32
    window: int = 1000
    column: int = -1

    def to_json(self) -> dict[str, Any]:
        """The rule's own keys only (the form a request-log record carries)."""
        out: dict[str, Any] = {"kind": self.kind.value}
        out.update({k: getattr(self, k) for k in _KEYS[self.kind]})
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CompareRule:
        """The rule ``to_json`` wrote (a state shipped between workers)."""
        kind = CompareKind(data["kind"])
        return cls(kind=kind, **{k: data[k] for k in _KEYS[kind] if k in data})


NUMERIC = CompareRule()
CLASS = CompareRule(kind=CompareKind.CLASS)

_KEYS: dict[CompareKind, tuple[str, ...]] = {
    CompareKind.NUMERIC: ("abs_tol", "rel_tol"),
    CompareKind.CLASS: ("max_classes",),
    CompareKind.SCORE: ("abs_tol", "rel_tol", "window", "column"),
}
_ALL_KEYS = ("kind", "abs_tol", "rel_tol", "max_classes", "window", "column")
# key -> (type, lowest allowed, highest allowed)
_LIMITS: dict[str, tuple[type, float, float]] = {
    "abs_tol": (float, 0.0, math.inf),
    "rel_tol": (float, 0.0, math.inf),
    "max_classes": (int, 2, 1024),
    "window": (int, 2, 1_000_000),
    "column": (int, -4096, 4095),
}


def default_rule(dtype: Any) -> CompareRule:
    """The rule for an output ``compare:`` does not name: numeric for floats, class otherwise."""
    kind = getattr(dtype, "kind", "O")
    return NUMERIC if kind in ("f", "c") else CLASS


def rule_problems(data: object, outputs: Collection[str] | None = None) -> list[Problem]:
    """Every problem in a ``compare:`` mapping, as (key path, message); [] when it is valid.

    ``outputs`` (when known) are the output names the shadow has: other names are problems.
    """
    problems: list[Problem] = []
    _parse(data, outputs, problems)
    return problems


def parse_rules(data: object, outputs: Collection[str] | None = None) -> dict[str, CompareRule]:
    """The rules of a ``compare:`` mapping (``None`` = no rules); ValueError listing every problem."""
    problems: list[Problem] = []
    rules = _parse(data, outputs, problems)
    if problems:
        raise ValueError(
            "; ".join(f"compare.{'.'.join(p)}: {m}" if p else f"compare: {m}" for p, m in problems)
        )
    return rules


def did_you_mean(word: str, candidates: Collection[str]) -> str:
    """A "; did you mean 'x'?" suffix when a close candidate exists, else ""."""
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def _parse(data: object, outputs: Collection[str] | None, problems: list[Problem]) -> dict[str, CompareRule]:
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        problems.append(((), "expected a mapping of output name to rule"))
        return {}
    rules: dict[str, CompareRule] = {}
    for name, body in data.items():
        if not isinstance(name, str):
            problems.append(((str(name),), "an output name must be text"))
            continue
        if outputs is not None and name not in outputs:
            problems.append(((name,), f"the shadow has no output '{name}'{did_you_mean(name, outputs)}"))
        rule = _rule(name, body, problems)
        if rule is not None:
            rules[name] = rule
    return rules


def _rule(name: str, body: object, problems: list[Problem]) -> CompareRule | None:
    if body is None:
        return NUMERIC
    if isinstance(body, str):
        body = {"kind": body}
    if not isinstance(body, Mapping):
        problems.append(((name,), "expected a rule mapping such as {abs_tol: 0.05} or a kind name"))
        return None
    before = len(problems)
    kind = _kind(name, body.get("kind", "numeric"), problems)
    values: dict[str, Any] = {}
    for key, value in body.items():
        key_text = str(key)
        if key_text == "kind":
            continue
        if key_text not in _ALL_KEYS:
            hint = did_you_mean(key_text, _ALL_KEYS)
            problems.append(((name, key_text), f"unknown key '{key_text}'{hint}"))
        elif kind is not None and key_text not in _KEYS[kind]:
            owners = [k.value for k in CompareKind if key_text in _KEYS[k]]
            problems.append(
                ((name, key_text), f"'{key_text}' applies to kind {' or '.join(owners)}, not {kind.value}")
            )
        else:
            checked = _value(key_text, value)
            if isinstance(checked, str):
                problems.append(((name, key_text), checked))
            else:
                values[key_text] = checked
    if kind is None or len(problems) > before:
        return None
    return CompareRule(kind=kind, **values)


def _kind(name: str, value: object, problems: list[Problem]) -> CompareKind | None:
    names = [k.value for k in CompareKind]
    if isinstance(value, str) and value in names:
        return CompareKind(value)
    hint = did_you_mean(value, names) if isinstance(value, str) else ""
    problems.append(((name, "kind"), f"unknown kind {value!r}; expected {', '.join(names)}{hint}"))
    return None


def _value(key: str, value: object) -> float | int | str:
    """The checked value, or a message (str) saying what is wrong with it."""
    wanted, low, high = _LIMITS[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"'{key}' must be {'a number' if wanted is float else 'an integer'}, got {value!r}"
    if wanted is int and not isinstance(value, int):
        return f"'{key}' must be an integer, got {value!r}"
    if not (low <= value <= high) or (isinstance(value, float) and math.isnan(value)):
        bound = f"at least {low:g}" if high == math.inf else f"between {low:g} and {high:g}"
        return f"'{key}' must be {bound}, got {value!r}"
    return float(value) if wanted is float else int(value)
