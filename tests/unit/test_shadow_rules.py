"""Compare rules: parsed from the ``compare:`` mapping, every mistake reported with its key path."""

from __future__ import annotations

import numpy as np
import pytest

from engine.shadow.rules import (
    CLASS,
    NUMERIC,
    CompareKind,
    CompareRule,
    default_rule,
    parse_rules,
    rule_problems,
)


def test_the_three_kinds_and_their_defaults() -> None:
    rules = parse_rules(
        {
            "prob": {"abs_tol": 0.05, "rel_tol": 0.1},
            "decision": {"kind": "class"},
            "score": {"kind": "score", "window": 1000},
            "plain": None,
            "label": "class",
        }
    )
    assert rules["prob"] == CompareRule(abs_tol=0.05, rel_tol=0.1)
    assert rules["decision"] == CompareRule(kind=CompareKind.CLASS, max_classes=32)
    assert rules["score"] == CompareRule(kind=CompareKind.SCORE, window=1000, column=-1, abs_tol=1e-6)
    assert rules["plain"] == NUMERIC
    assert rules["label"] == CLASS
    assert rules["score"].to_json() == {
        "kind": "score",
        "abs_tol": 1e-6,
        "rel_tol": 0.0,
        "window": 1000,
        "column": -1,
    }
    assert rules["decision"].to_json() == {"kind": "class", "max_classes": 32}


def test_integers_are_accepted_for_tolerances_and_kept_as_floats() -> None:
    rule = parse_rules({"prob": {"abs_tol": 1}})["prob"]
    assert rule.abs_tol == 1.0 and isinstance(rule.abs_tol, float)


def test_no_compare_mapping_means_no_rules() -> None:
    assert parse_rules(None) == {}
    assert rule_problems(None) == []


def test_unknown_keys_get_a_suggestion() -> None:
    problems = rule_problems({"prob": {"abs_tl": 0.05}, "decision": {"kind": "clas"}})
    assert problems == [
        (("prob", "abs_tl"), "unknown key 'abs_tl'; did you mean 'abs_tol'?"),
        (("decision", "kind"), "unknown kind 'clas'; expected numeric, class, score; did you mean 'class'?"),
    ]


def test_a_key_of_another_kind_is_named_as_such() -> None:
    problems = rule_problems({"decision": {"kind": "class", "abs_tol": 0.1}, "prob": {"window": 10}})
    assert problems == [
        (("decision", "abs_tol"), "'abs_tol' applies to kind numeric or score, not class"),
        (("prob", "window"), "'window' applies to kind score, not numeric"),
    ]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"abs_tol": -1}, "'abs_tol' must be at least 0, got -1"),
        ({"abs_tol": "0.1"}, "'abs_tol' must be a number, got '0.1'"),
        ({"rel_tol": True}, "'rel_tol' must be a number, got True"),
        ({"rel_tol": float("nan")}, "'rel_tol' must be at least 0, got nan"),
        ({"kind": "score", "window": 1.5}, "'window' must be an integer, got 1.5"),
        ({"kind": "score", "window": 1}, "'window' must be between 2 and 1e+06, got 1"),
        ({"kind": "class", "max_classes": 5000}, "'max_classes' must be between 2 and 1024, got 5000"),
    ],
)
def test_bad_values(body: dict[str, object], message: str) -> None:
    problems = rule_problems({"out": body})
    assert len(problems) == 1
    path, text = problems[0]
    assert path[0] == "out" and text == message


def test_shapes_that_are_not_rules() -> None:
    assert rule_problems([1, 2]) == [((), "expected a mapping of output name to rule")]
    assert rule_problems({"out": 3}) == [
        (("out",), "expected a rule mapping such as {abs_tol: 0.05} or a kind name")
    ]


def test_output_names_are_checked_when_known() -> None:
    problems = rule_problems({"porb": {}}, outputs=["prob", "decision"])
    assert problems == [(("porb",), "the shadow has no output 'porb'; did you mean 'prob'?")]


def test_parse_raises_with_every_problem() -> None:
    with pytest.raises(
        ValueError, match=r"compare\.a\.abs_tol: 'abs_tol' must be at least 0.*compare\.b\.kind: unknown kind"
    ):
        parse_rules({"a": {"abs_tol": -1}, "b": {"kind": "nope"}})


def test_default_rule_follows_the_dtype() -> None:
    assert default_rule(np.dtype(np.float32)) == NUMERIC
    assert default_rule(np.dtype(np.int64)) == CLASS
    assert default_rule(np.dtype(bool)) == CLASS
    assert default_rule(np.dtype(object)) == CLASS
