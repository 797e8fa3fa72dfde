"""The SLA file: every problem reported at once, with its key's path; exit 2 from the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtest.cli import main
from loadtest.sla import SlaError, parse_sla
from loadtest.units import fraction, seconds

from .conftest import write_sla

GOOD = {
    "target": {"url": "127.0.0.1:1", "graph": "fraud"},
    "load": {"stages": [{"rate": 10, "duration": "1s"}]},
}


def test_a_minimal_sla_gets_defaults() -> None:
    sla = parse_sla(GOOD)
    assert sla.name == "fraud"
    assert sla.source.kind == "generate"
    assert sla.load.arrivals == "poisson" and sla.load.processes == 1
    assert sla.load.duration_s == 1.0


def test_every_problem_is_reported_with_its_path() -> None:
    bad = {
        "target": {"url": "127.0.0.1:1", "grpah": "fraud"},
        "load": {"stages": [{"rate": 10}, {"to": 50, "duration": "5 parsecs"}], "arrivals": "bursty"},
        "assertions": {"latency": {"p99": 25, "q50": "5ms"}, "errors": {"max_rate": "150%"}},
    }
    with pytest.raises(SlaError) as info:
        parse_sla(bad)
    text = "\n".join(info.value.problems)
    assert "target.grpah: unknown key; did you mean 'graph'?" in text
    assert "target.graph: required" in text
    assert "load.stages[0].duration: required" in text
    assert "load.stages[1].duration: expected a duration" in text
    assert "load.arrivals: expected one of poisson, uniform" in text
    assert "assertions.latency.p99: give a unit, e.g. '25ms'" in text
    assert "assertions.latency.q50: unknown percentile" in text
    assert "assertions.errors.max_rate: a fraction must lie between 0 and 1" in text


def test_server_assertions_need_a_metrics_url() -> None:
    sla = {**GOOD, "assertions": {"server": [{"metric": "engine_in_flight_requests", "max": 5}]}}
    with pytest.raises(SlaError, match=r"target\.metrics: required by assertions\.server"):
        parse_sla(sla)


def test_units() -> None:
    assert seconds("250ms") == 0.25 and seconds("2m") == 120 and seconds(3) == 3
    assert fraction("0.1%") == pytest.approx(0.001) and fraction(0.02) == 0.02
    with pytest.raises(ValueError, match="give a unit"):
        seconds(5, unit_required=True)


def test_the_cli_exits_2_and_prints_the_problems(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = write_sla(tmp_path / "bad.yaml", {**GOOD, "load": {"stages": [{"rate": -5, "duration": "1s"}]}})
    assert main(["run", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "is misconfigured" in err and "load.stages[0].rate: a rate cannot be negative" in err


def test_check_validates_without_sending_load(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["check", str(write_sla(tmp_path / "ok.yaml", GOOD))]) == 0
    assert "valid" in capsys.readouterr().out
    assert main(["check", str(tmp_path / "missing.yaml")]) == 2


def test_the_shipped_examples_are_valid() -> None:
    examples = Path(__file__).resolve().parents[2] / "loadtest" / "examples"
    for path in sorted(examples.glob("*.yaml")):
        assert main(["check", str(path)]) == 0, path
