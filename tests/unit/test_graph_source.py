"""YAML loading: positions, duplicate keys, YAML 1.1 surprises, limits, tags."""

from __future__ import annotations

import pytest

from engine.graph.reading.source import MAX_NODES, load_yaml
from engine.graph.values.diagnostics import Pos, Report


def _load(text: str):
    report = Report("g.yaml")
    return load_yaml(text, report), report.items


def test_every_key_and_value_has_its_line_and_column() -> None:
    doc, problems = _load("inputs:\n  amount: {datatype: FP32, shape: [-1, 1]}\nlist:\n  - a\n  - 'b'\n")
    assert not problems and doc is not None
    at = doc.positions
    assert at.key(("inputs", "amount")) == Pos(2, 3)
    assert at.value(("inputs", "amount", "datatype")) == Pos(2, 22)
    assert at.value(("inputs", "amount", "shape", 1)) == Pos(2, 40)
    assert at.value(("list", 1)) == Pos(5, 5)
    assert at.text(("list", 1)) == Pos(5, 6)  # after the quote
    assert at.value(("missing", "deeper")) == Pos(1, 1)


def test_duplicate_key_is_an_error_not_an_overwrite() -> None:
    doc, problems = _load("a: 1\nb: 2\na: 3\n")
    assert doc is not None and doc.data["a"] == 1
    assert len(problems) == 1
    assert problems[0].line == 3 and "duplicate key 'a' (first given at line 1)" in problems[0].message


def test_yaml_1_1_booleans_and_oddities_stay_text() -> None:
    doc, problems = _load("no: yes\nflag: on\nreal: true\nexp: 1e3\nhex: 0x10\nsexa: 1:20\nday: 2024-01-01\n")
    assert not problems and doc is not None
    assert doc.data == {
        "no": "yes", "flag": "on", "real": True, "exp": 1000.0,
        "hex": 16, "sexa": "1:20", "day": "2024-01-01",
    }  # fmt: skip


def test_merge_keys_work_and_explicit_keys_win() -> None:
    doc, problems = _load("base: &b {x: 1, y: 2}\nm: {<<: *b, y: 3}\n")
    assert not problems and doc is not None
    assert doc.data["m"] == {"y": 3, "x": 1}


def test_alias_bomb_is_rejected() -> None:
    lines = ["a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    for i in range(1, 8):
        prev, cur = chr(96 + i), chr(97 + i)
        lines.append(f"{cur}: &{cur} [" + ", ".join([f"*{prev}"] * 10) + "]")
    doc, problems = _load("\n".join(lines) + "\n")
    assert doc is None
    assert f"more than {MAX_NODES} values" in problems[0].message


def test_excessive_nesting_is_rejected() -> None:
    doc, problems = _load("a: " + "[" * 100 + "]" * 100 + "\n")
    assert doc is None and "nested too deeply" in problems[0].message


def test_python_tags_are_refused() -> None:
    _, problems = _load("a: !!python/object/apply:os.system ['echo hi']\n")
    assert problems[0].line == 1
    assert "YAML tag '!!python/object/apply:os.system' is not supported" in problems[0].message


def test_syntax_error_has_its_position() -> None:
    doc, problems = _load("a: 1\nb: [1, 2\nc: 3\n")
    assert doc is None
    assert problems[0].message.startswith("YAML syntax error")
    assert problems[0].line == 3


def test_two_documents_are_refused() -> None:
    _, problems = _load("a: 1\n---\nb: 2\n")
    assert "exactly one YAML document" in problems[0].message


def test_empty_file() -> None:
    doc, problems = _load("")
    assert doc is None and problems[0].message == "graph file is empty"


@pytest.mark.parametrize(
    ("text", "line", "col", "message"),
    [
        (
            "inputs:\n  x: {datatype: FP32, shape: [-1, 4]}\n nodes:\n",
            3, 2,
            "this line's indentation does not fit the block above it (found a new indented mapping): "
            "keys of one mapping, and items of one list, must start in the same column",
        ),
        ("a:\n  - 1\n  b: 2\n", 3, 3, "this line's indentation does not fit the block above it (found a key"),
        ("a: b: c\n", 1, 5, "unexpected ':' here: a key indented too far, or a text value containing ': '"),
        ("nodes:\n  x: {a: 1\n", 3, 1, "the '{' at 2:6 is not closed: expected ',' or '}' but found the end"),
        ("a: [1, 2\n", 2, 1, "the '[' at 1:4 is not closed: expected ',' or ']' but found the end"),
        ('a: "x\n', 2, 1, "the quoted text starting at 1:4 is never closed"),
        ("a:\tb\n", 1, 3, "a tab character: YAML indents with spaces only"),
        ("a: @x\n", 1, 4, "'@' cannot start a value; put the value in quotes"),
        ("a: *x\n", 1, 4, "'*x' names no anchor '&x' defined before it"),
    ],
)  # fmt: skip
def test_yaml_syntax_errors_are_in_our_words(text: str, line: int, col: int, message: str) -> None:
    doc, problems = _load(text)
    assert doc is None and len(problems) == 1
    assert (problems[0].line, problems[0].col) == (line, col)
    assert problems[0].message.startswith("YAML syntax error: " + message)
    assert "<block" not in problems[0].message and "<stream" not in problems[0].message
