"""Source positions and the collector every graph check reports into.

A ``Pos`` is a 1-based line and column in the graph file. Checks never raise for
a modeller's mistake: they add a ``Diagnostic`` to a ``Report`` and carry on, so
one load reports every problem at once.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass, field

from engine.errors import Diagnostic


@dataclass(frozen=True, slots=True, order=True)
class Pos:
    """A 1-based line and column in the graph file."""

    line: int
    col: int

    def shifted(self, columns: int) -> Pos:
        """The position ``columns`` characters further along the same line."""
        return Pos(self.line, self.col + columns)


NOWHERE = Pos(1, 1)


@dataclass
class Report:
    """Collects the diagnostics of one graph file, in the order they are found."""

    file: str
    items: list[Diagnostic] = field(default_factory=list)

    def error(self, pos: Pos, message: str) -> None:
        self.items.append(Diagnostic(self.file, pos.line, pos.col, message))

    def warning(self, pos: Pos, message: str) -> None:
        self.items.append(Diagnostic(self.file, pos.line, pos.col, message, severity="warning"))

    @property
    def has_errors(self) -> bool:
        return any(d.severity == "error" for d in self.items)

    def sorted(self) -> list[Diagnostic]:
        """Diagnostics in file order (stable for problems found on the same spot)."""
        return sorted(self.items, key=lambda d: (d.line, d.col))


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """A "; did you mean 'x'?" suffix when a close candidate exists, else ""."""
    pool = [c for c in candidates if c]
    close = difflib.get_close_matches(word, pool, n=1, cutoff=0.6)
    if not close:
        lowered = {c.lower(): c for c in pool}
        if word.lower() in lowered:
            close = [lowered[word.lower()]]
    return f"; did you mean '{close[0]}'?" if close else ""


def one_of(options: Iterable[str]) -> str:
    """ "'a', 'b' or 'c'" for messages."""
    quoted = [f"'{o}'" for o in options]
    if len(quoted) <= 1:
        return "".join(quoted)
    return ", ".join(quoted[:-1]) + " or " + quoted[-1]
