"""Graph YAML -> plain Python values plus the file position of every key and value.

We compose the YAML node tree with a ``yaml.SafeLoader`` subclass (no Python
tags, nothing is constructed by PyYAML) and build plain ``dict``/``list``/
scalar values ourselves, recording a ``Pos`` for every mapping key and value
under its *path* (``("nodes", "x", "inputs", 0)``).

Scalars follow the YAML 1.2 core schema, not PyYAML's YAML 1.1 defaults, so a
graph means what it looks like:

* only ``true``/``false`` (any case style) are booleans; ``yes``, ``no``,
  ``on``, ``off``, ``y``, ``n`` stay text;
* ``1e5`` is a float; ``0o17``/``0x1f`` are ints; ``1_000``, ``012:30``
  (sexagesimal) and dates stay text;
* mapping keys are always text, exactly as written (``no:`` is the key "no").

A key given twice in one mapping is an error (PyYAML silently keeps the last).
Anchors, aliases and ``<<`` merge keys work; a document may expand to at most
``MAX_NODES`` values and nest at most ``MAX_DEPTH`` levels, so an alias bomb is
rejected with a diagnostic instead of exhausting memory.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from engine.graph.values.diagnostics import NOWHERE, Pos, Report

MAX_NODES = 20_000
MAX_DEPTH = 40
MAX_CHARS = 2_000_000

YamlPath = tuple[str | int, ...]

_TAG = "tag:yaml.org,2002:"
_STR, _INT, _FLOAT, _BOOL, _NULL = (_TAG + t for t in ("str", "int", "float", "bool", "null"))
_MAP, _SEQ, _MERGE = _TAG + "map", _TAG + "seq", _TAG + "merge"
_KNOWN_TAGS = {_STR, _INT, _FLOAT, _BOOL, _NULL, _MAP, _SEQ, _MERGE}


class _GraphLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 core-schema implicit resolvers (see module docstring)."""

    yaml_implicit_resolvers: dict[str | None, list[tuple[str, re.Pattern[str]]]] = {}


_GraphLoader.add_implicit_resolver(_NULL, re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""])
_GraphLoader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
_GraphLoader.add_implicit_resolver(
    _INT, re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"), list("-+0123456789")
)
_GraphLoader.add_implicit_resolver(
    _FLOAT,
    re.compile(
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+.0123456789"),
)
_GraphLoader.add_implicit_resolver(_MERGE, re.compile(r"^<<$"), ["<"])


@dataclass
class SourceMap:
    """Where each key and value of a loaded document was written."""

    values: dict[YamlPath, Pos] = field(default_factory=dict)
    keys: dict[YamlPath, Pos] = field(default_factory=dict)
    quoted: set[YamlPath] = field(default_factory=set)

    def value(self, path: YamlPath) -> Pos:
        """Position of the value at ``path`` (or of its nearest recorded ancestor)."""
        while path not in self.values and path:
            path = path[:-1]
        return self.values.get(path, NOWHERE)

    def text(self, path: YamlPath) -> Pos:
        """Position of the first character of a text value (after its opening quote)."""
        pos = self.value(path)
        return pos.shifted(1) if path in self.quoted else pos

    def key(self, path: YamlPath) -> Pos:
        """Position of the mapping key that introduces ``path`` (else its value)."""
        return self.keys.get(path) or self.value(path)


@dataclass(frozen=True)
class SourceDoc:
    data: Any
    positions: SourceMap


class _TooLarge(Exception):
    def __init__(self, pos: Pos, message: str) -> None:
        super().__init__(message)
        self.pos = pos
        self.message = message


def _pos(node: Node) -> Pos:
    return Pos(node.start_mark.line + 1, node.start_mark.column + 1)


_TOKENS = {
    "<block end>": "the end of the indented block",
    "<block mapping start>": "a new indented mapping",
    "<block sequence start>": "a new indented list",
    "<stream end>": "the end of the file",
    "<document start>": "'---'",
    "<scalar>": "a value",
    "?": "a key",
    "-": "a list item",
}


def _where(mark: yaml.Mark | None) -> str:
    return f" at {mark.line + 1}:{mark.column + 1}" if mark is not None else ""


def yaml_problem(exc: yaml.MarkedYAMLError) -> str:
    """PyYAML's parser message in a modeller's words (its position is reported beside it)."""
    problem, context = exc.problem or "", exc.context or ""
    opened = _where(exc.context_mark)
    if "expected a single document" in str(exc):
        return "a graph file holds exactly one YAML document (found a second '---')"
    if problem == "mapping values are not allowed here":
        return (
            "unexpected ':' here: a key indented too far, or a text value containing ': ' "
            "(quote such a value)"
        )
    if problem.startswith("expected <block end>"):
        found = problem.partition("but found ")[2].strip("'")
        what = _TOKENS.get(found, found)
        return (
            f"this line's indentation does not fit the block above it (found {what}): "
            "keys of one mapping, and items of one list, must start in the same column"
        )
    if problem.startswith("expected ',' or '}'") or problem.startswith("expected ',' or ']'"):
        close = "}" if "'}'" in problem else "]"
        opener = "{" if close == "}" else "["
        found = problem.partition("but got ")[2].strip("'")
        found = _TOKENS.get(found, found)
        return f"the '{opener}'{opened} is not closed: expected ',' or '{close}' but found {found}"
    if "quoted scalar" in context and "end of stream" in problem:
        return f"the quoted text starting{opened} is never closed"
    if "could not find expected ':'" in problem:
        return f"a key without ':' (the entry starting{opened} needs 'key: value')"
    if problem.startswith("found character '\\t'") or problem.startswith("found character '\t'"):
        return "a tab character: YAML indents with spaces only"
    if problem.startswith("found character"):
        char = problem.split("'")[1] if "'" in problem else "?"
        return f"'{char}' cannot start a value; put the value in quotes"
    if problem.startswith("found undefined alias"):
        name = problem.split("'")[1] if "'" in problem else ""
        return f"'*{name}' names no anchor '&{name}' defined before it"
    text = problem or context or "cannot parse"
    for token, words in _TOKENS.items():
        if token.startswith("<"):
            text = text.replace(token, words).replace(f"'{words}'", words)
    return text


def load_yaml(text: str, report: Report) -> SourceDoc | None:
    """Parse one YAML document; problems go to ``report``. None when nothing usable was read."""
    if len(text) > MAX_CHARS:
        report.error(NOWHERE, f"graph file is too large ({len(text)} characters; the limit is {MAX_CHARS})")
        return None
    try:
        loader = _GraphLoader(text)  # the reader checks every character as it is constructed
    except yaml.reader.ReaderError as exc:
        before = text[: exc.position]
        pos = Pos(before.count("\n") + 1, len(before) - before.rfind("\n"))
        code = exc.character if isinstance(exc.character, int) else ord(exc.character)
        report.error(pos, f"YAML cannot contain the control character U+{code:04X}")
        return None
    try:
        root = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        pos = Pos(mark.line + 1, mark.column + 1) if mark else NOWHERE
        report.error(pos, f"YAML syntax error: {yaml_problem(exc)}")
        return None
    except yaml.YAMLError as exc:
        report.error(NOWHERE, f"YAML error: {exc}")
        return None
    except RecursionError:
        report.error(NOWHERE, f"YAML is nested too deeply (the limit is {MAX_DEPTH} levels)")
        return None
    finally:
        loader.dispose()
    if root is None:
        report.error(NOWHERE, "graph file is empty")
        return None
    builder = _Builder(report)
    try:
        data = builder.build(root, (), 0)
    except _TooLarge as exc:
        report.error(exc.pos, exc.message)
        return None
    return SourceDoc(data, builder.positions)


class _Builder:
    """Walks a composed node tree into plain values, recording positions."""

    def __init__(self, report: Report) -> None:
        self.report = report
        self.positions = SourceMap()
        self.count = 0

    def build(self, node: Node, path: YamlPath, depth: int) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            raise _TooLarge(
                _pos(node),
                f"YAML document expands to more than {MAX_NODES} values (too many aliases?)",
            )
        if depth > MAX_DEPTH:
            raise _TooLarge(_pos(node), f"YAML is nested too deeply (the limit is {MAX_DEPTH} levels)")
        self.positions.values.setdefault(path, _pos(node))
        if node.tag not in _KNOWN_TAGS:
            self.report.error(
                _pos(node), f"YAML tag '{node.tag.replace(_TAG, '!!')}' is not supported in graph files"
            )
            return None
        if isinstance(node, MappingNode):
            return self._mapping(node, path, depth)
        if isinstance(node, SequenceNode):
            return [self.build(item, (*path, i), depth + 1) for i, item in enumerate(node.value)]
        assert isinstance(node, ScalarNode)
        if node.style in ("'", '"'):
            self.positions.quoted.add(path)
        return self._scalar(node)

    def _mapping(self, node: MappingNode, path: YamlPath, depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        first: dict[str, Pos] = {}
        for key_node, value_node, merged in self._entries(node, depth):
            if not isinstance(key_node, ScalarNode):
                self.report.error(_pos(key_node), "mapping keys must be plain text, not a list or mapping")
                continue
            key = key_node.value
            if key in first:
                if not merged:
                    self.report.error(
                        _pos(key_node),
                        f"duplicate key '{key}' (first given at line {first[key].line}); "
                        "YAML keys must be unique within a mapping",
                    )
                continue
            first[key] = _pos(key_node)
            self.positions.keys[(*path, key)] = _pos(key_node)
            out[key] = self.build(value_node, (*path, key), depth + 1)
        return out

    def _entries(self, node: MappingNode, depth: int) -> list[tuple[Node, Node, bool]]:
        """Key/value pairs with ``<<`` merges flattened after the explicit keys (explicit wins)."""
        if depth > MAX_DEPTH:
            raise _TooLarge(_pos(node), f"YAML is nested too deeply (the limit is {MAX_DEPTH} levels)")
        explicit: list[tuple[Node, Node, bool]] = []
        merged: list[tuple[Node, Node, bool]] = []
        for key_node, value_node in node.value:
            if key_node.tag != _MERGE:
                explicit.append((key_node, value_node, False))
                continue
            sources = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
            for source in sources:
                if not isinstance(source, MappingNode):
                    self.report.error(_pos(source), "'<<' merges mappings only (use an alias of a mapping)")
                    continue
                self.count += len(source.value)
                merged.extend((k, v, True) for k, v, _ in self._entries(source, depth + 1))
        return explicit + merged

    def _scalar(self, node: ScalarNode) -> Any:
        text = node.value
        tag = node.tag
        if tag == _STR:
            return text
        if tag == _NULL:
            return None
        if tag == _BOOL:
            if text.lower() in ("true", "false"):
                return text.lower() == "true"
            self.report.error(_pos(node), f"'{text}' is not a boolean (write true or false)")
            return None
        if tag == _INT:
            try:
                if text.startswith("0o"):
                    return int(text[2:], 8)
                return int(text, 16) if text.startswith("0x") else int(text, 10)
            except ValueError:
                self.report.error(_pos(node), f"'{text}' is not an integer")
                return None
        if tag == _FLOAT:
            lowered = text.lower()
            if lowered.endswith(".inf"):
                return -math.inf if lowered.startswith("-") else math.inf
            if lowered == ".nan":
                return math.nan
            try:
                return float(text)
            except ValueError:
                self.report.error(_pos(node), f"'{text}' is not a number")
                return None
        self.report.error(_pos(node), f"'<<' is only valid as a mapping key (tag {tag})")
        return None
