"""``loadtest capacity``: a search over rates on a small budget (short steps)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loadtest.cli import main
from tests.server_thread import ServerThread

from .conftest import write_sla


def test_capacity_search_reports_the_highest_passing_rate(
    tmp_path: Path, fraud_server: ServerThread, capsys: pytest.CaptureFixture
) -> None:
    sla = {
        "name": "fraud-capacity",
        "target": {"url": fraud_server.url, "graph": "fraud", "timeout": "2s"},
        "source": {"generate": {"pool": 32}},
        "load": {"stages": [{"rate": 100, "duration": "1s"}]},
        # bounds tight enough that the doubling search meets a failing step within its budget
        "assertions": {"latency": {"p99": "40ms"}, "errors": {"max_rate": "1%"}},
        "capacity": {
            "start": 100,
            "max": 3200,
            "step": "1s",
            "warmup": "0.3s",
            "max_steps": 4,
            "precision": "25%",
        },
    }
    path = write_sla(tmp_path / "sla.yaml", sla)
    out = tmp_path / "out"
    code = main(["capacity", str(path), "--out", str(out), "--quiet", "--no-plots"])
    stdout = capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    capacity = report["capacity"]
    assert 1 <= len(capacity["steps"]) <= 4
    assert [s["rate"] for s in capacity["steps"]][:2] == [100, 200] or capacity["steps"][0][
        "verdict"
    ] == "fail"
    if code == 0:
        rate = capacity["capacity_rate"]
        assert rate is not None and rate > 0  # below 100 when a busy machine failed the first step
        assert f"capacity: {rate:.0f}/s meets every assertion" in stdout
        best = next(s for s in capacity["steps"] if s["rate"] == rate)
        assert best["verdict"] == "pass"
        assert rate == max(s["rate"] for s in capacity["steps"] if s["verdict"] == "pass")
    else:  # a machine too slow for 100/s under the test's bounds still gets an answer
        assert code == 1 and capacity["capacity_rate"] is None
    assert report["mode"] == "capacity"
    assert "## Capacity search" in (out / "summary.md").read_text()
