"""The graph language's ``logging:`` key: reading, diagnostics at file:line:col, sampling."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest

from engine.graph.values.logging_policy import HASH_KEY_ENV, OFF, LoggingPolicy
from tests.unit.graph_cases import FRAUD, diagnose, load, only_error

POLICY = """\
logging:
  sample: 0.1
  always_on: [error, shadow_disagreement]
  nodes: true
  redact: [inputs.amount, deep.y]
  hash: [outputs.decision]
  max_tensor_elements: 64
"""


@pytest.fixture(autouse=True)
def _hash_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(HASH_KEY_ENV, "test-secret")


def test_no_logging_key_means_off(tmp_path: Path) -> None:
    graph = load(tmp_path, FRAUD)
    assert graph.spec.logging == OFF
    assert not graph.spec.logging.enabled
    assert graph.spec.logging.should_log(False) is None


def test_a_full_policy_is_read(tmp_path: Path) -> None:
    policy = load(tmp_path, FRAUD + POLICY).spec.logging
    assert policy.sample == 0.1
    assert policy.always_on == {"error", "shadow_disagreement"}
    assert policy.nodes is True
    assert policy.max_tensor_elements == 64
    assert {"inputs.amount", "deep.y"} <= policy.redact
    # outputs.decision is served by node 'decision' (a bare reference): its outputs are hashed too
    assert policy.hash == {"outputs.decision", "decision.*"}


def test_redacting_a_node_output_also_redacts_the_graph_output_serving_it(tmp_path: Path) -> None:
    policy = load(tmp_path, FRAUD + "logging: {redact: [score.output]}\n").spec.logging
    assert policy.redact == {"score.output", "outputs.score"}


@pytest.mark.parametrize(
    ("yaml", "message", "needle"),
    [
        (
            "logging: {sample: 0.1, nodse: true}\n",
            "unknown key 'nodse' in 'logging'; did you mean 'nodes'?",
            "nodse",
        ),
        ("logging: {sample: 1.5}\n", "'sample' must be a number from 0 to 1", "1.5"),
        ("logging: {sample: true}\n", "'sample' must be a number from 0 to 1", "true"),
        ("logging: {always_on: [eror]}\n", "unknown always_on value 'eror'; did you mean 'error'?", "eror"),
        ("logging: {nodes: yes}\n", "'nodes' must be true or false", "yes"),
        (
            "logging: {max_tensor_elements: 0}\n",
            "'max_tensor_elements' must be a positive whole number",
            "0}",
        ),
        (
            "logging: {redact: [inputs.amout]}\n",
            "unknown graph input 'amout'; did you mean 'amount'?",
            "inputs.amout",
        ),
        (
            "logging: {redact: [outputs.scor]}\n",
            "unknown graph output 'scor'; did you mean 'score'?",
            "outputs.scor",
        ),
        ("logging: {hash: [deep.z]}\n", "node 'deep' has no output 'z'", "deep.z"),
        ("logging: {redact: [dep.y]}\n", "unknown node 'dep'; did you mean 'deep'?", "dep.y"),
        (
            "logging: {redact: [amount]}\n",
            "'redact' entries are inputs.NAME, outputs.NAME or NODE.TENSOR",
            "amount",
        ),
        (
            "logging: {redact: [inputs.amount], hash: [inputs.amount]}\n",
            "both redacted and hashed",
            "inputs.amount]}",
        ),
        ("logging: {redact: inputs.amount}\n", "'redact' must be a list", "inputs"),
        ("logging: [sample]\n", "'logging' must be a mapping", "["),
    ],
)
def test_mistakes_are_reported_where_they_are(tmp_path: Path, yaml: str, message: str, needle: str) -> None:
    text = FRAUD + yaml
    error = only_error(diagnose(tmp_path, text))
    assert message in error.message
    assert error.line == len(text.splitlines())  # the logging line, the file's last
    assert error.col == 1 + text.splitlines()[-1].index(needle)


def test_hashing_without_the_key_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(HASH_KEY_ENV)
    error = only_error(diagnose(tmp_path, FRAUD + "logging: {hash: [inputs.amount]}\n"))
    assert HASH_KEY_ENV in error.message and "never hashed unsalted" in error.message


def test_should_log_reasons() -> None:
    policy = LoggingPolicy(sample=0.25, always_on=frozenset({"error"}))
    assert policy.should_log(False, draw=0.99) == "error"
    assert policy.should_log(True, draw=0.1) == "sample"
    assert policy.should_log(True, draw=0.3) is None
    assert LoggingPolicy(sample=1.0).should_log(True) == "sample"
    assert LoggingPolicy(sample=1.0).should_log(False) == "sample"
    assert LoggingPolicy(always_on=frozenset({"error"})).should_log(True) is None
    # logged only when a shadow disagrees, which is known only after the request: enabled
    assert LoggingPolicy(always_on=frozenset({"shadow_disagreement"})).enabled is True


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.01])
def test_sampling_rate_holds_within_four_sigma(rate: float) -> None:
    random.seed(12345)
    policy = LoggingPolicy(sample=rate)
    n = 10_000
    hits = sum(policy.should_log(True) == "sample" for _ in range(n))
    sigma = math.sqrt(n * rate * (1 - rate))
    assert abs(hits - n * rate) <= 4 * sigma, (hits, n * rate, sigma)
