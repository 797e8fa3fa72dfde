"""The ``Reader``: typed access to a graph file's plain YAML values, reporting at their positions.

Every sub-reader (nodes, features, batching, shadows, ``logging:``) takes one ``Reader``: it
holds the document, its positions and the ``Report``, and its accessors (``mapping``, ``text``,
``ref``, ``datatype``, ``duration``...) return the value when it has the right type, or report
why not (with a "did you mean" for unknown keys) and return None, so reading carries on.
"""

from __future__ import annotations

import re
from typing import Any

from engine.graph.reading.durations import EXAMPLES, seconds
from engine.graph.reading.source import SourceDoc, YamlPath
from engine.graph.values.diagnostics import Pos, Report, did_you_mean, one_of
from engine.graph.values.spec import Ref
from engine.tensors import DataType

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
REFERENCE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.\S+)?$")


class Reader:
    """Shared helpers: typed access to values with diagnostics at their positions."""

    def __init__(self, doc: SourceDoc, report: Report) -> None:
        self.doc = doc
        self.at = doc.positions
        self.report = report

    def error(self, pos: Pos, message: str) -> None:
        self.report.error(pos, message)

    def mapping(self, value: Any, path: YamlPath, what: str) -> dict[str, Any] | None:
        if isinstance(value, dict):
            return value
        self.error(self.at.value(path), f"{what} must be a mapping (key: value), got {describe(value)}")
        return None

    def check_keys(
        self, mapping: dict[str, Any], path: YamlPath, allowed: tuple[str, ...], where: str
    ) -> None:
        for key in mapping:
            if key not in allowed:
                hint = did_you_mean(key, allowed) or f" (expected {one_of(allowed)})"
                self.error(self.at.key((*path, key)), f"unknown key '{key}' in {where}{hint}")

    def text(self, value: Any, path: YamlPath, what: str) -> str | None:
        if isinstance(value, str) and value.strip():
            return value
        self.error(self.at.value(path), f"{what} must be text, got {describe(value)}")
        return None

    def ref(self, value: Any, path: YamlPath, what: str) -> Ref | None:
        pos = self.at.text(path)
        if not isinstance(value, str):
            self.error(
                self.at.value(path),
                f"{what} must be a reference (inputs.NAME, NODE or NODE.TENSOR), got {describe(value)}",
            )
            return None
        if not REFERENCE.match(value):
            self.error(pos, f"'{value}' is not a reference; write inputs.NAME, NODE or NODE.TENSOR")
            return None
        return Ref(value, pos)

    def name(self, name: str, path: YamlPath, what: str, pattern: re.Pattern[str] = IDENTIFIER) -> bool:
        if pattern.match(name):
            return True
        rule = "letters, digits and '_', not starting with a digit" if pattern is IDENTIFIER else "no spaces"
        self.error(self.at.key(path), f"{what} name '{name}' is not valid ({rule})")
        return False

    def datatype(self, body: dict[str, Any], path: YamlPath, what: str) -> DataType | None:
        """``body['datatype']`` parsed (``FP32``, case-insensitive); None after reporting why not."""
        if "datatype" not in body:
            self.error(self.at.key(path), f"{what} needs a 'datatype' (e.g. FP32)")
            return None
        value = body["datatype"]
        pos = self.at.text((*path, "datatype"))
        if not isinstance(value, str):
            self.error(pos, f"'datatype' must be a datatype name such as FP32, got {describe(value)}")
            return None
        try:
            return DataType.parse(value)
        except ValueError:
            hint = did_you_mean(value.upper(), [d.value for d in DataType])
            names = ", ".join(d.value for d in DataType)
            self.error(pos, f"unknown datatype '{value}'{hint or ' (expected one of ' + names + ')'}")
            return None

    def duration(self, value: Any, path: YamlPath, what: str) -> float | None:
        """A positive duration in seconds (``"20ms"``, ``"1.5s"``, ``"1h"``, a number); None after
        reporting why not."""
        result = seconds(value)
        if result is None or not result > 0:
            self.error(
                self.at.value(path), f"{what} must be a positive duration such as {EXAMPLES}, got {value!r}"
            )
            return None
        return result


def describe(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, str):
        return f"the text '{value}'"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, list):
        return "a list"
    return "a mapping"
