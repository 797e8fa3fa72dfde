"""Open-loop generation against a fast echo endpoint and a stalling one.

Tolerances are for schedule keeping, not server speed: the echo server answers in
well under a millisecond, so what is measured here is the generator.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from loadtest.cli import main

from .conftest import EchoServer, write_sla


def _run(tmp_path: Path, url: str, load: dict[str, Any], assertions: dict | None = None) -> tuple[int, dict]:
    sla = {
        "name": "echo",
        "target": {"url": url, "graph": "echo", "timeout": "5s"},
        "source": {"generate": {"pool": 16}},
        "load": load,
        "assertions": assertions or {},
    }
    path = write_sla(tmp_path / "sla.yaml", sla)
    code = main(["run", str(path), "--out", str(tmp_path / "out"), "--quiet", "--no-plots"])
    return code, json.loads((tmp_path / "out" / "report.json").read_text())


def test_the_generator_keeps_500_per_second_across_two_processes(
    tmp_path: Path, echo_server: EchoServer
) -> None:
    code, report = _run(
        tmp_path,
        echo_server.url,
        {
            "arrivals": "uniform",
            "warmup": "0.5s",
            "stages": [{"rate": 500, "duration": "2s"}],
            "processes": 2,
        },
        {"min_rate": 475, "errors": {"max_rate": 0}},
    )
    s = report["summary"]
    assert code == 0, report["checks"]
    assert s["requests"] == 1000 and s["errors"] == 0
    assert abs(s["sent_rate"] - 500) <= 25, s
    assert abs(s["achieved_rate"] - 500) <= 25, s
    lag = report["generator"]["lag_us"]
    assert lag["p50_us"] < 2_000 and lag["p99_us"] < 10_000, lag
    assert report["checks"][0]["name"] == "generator" and report["checks"][0]["ok"]
    # every measured second carried its share of the load
    measured = [row for row in report["timeline"] if row["phase"] == "measure"]
    assert len(measured) == 2 and all(abs(row["sent_rate"] - 500) <= 50 for row in measured)


def test_a_poisson_ramp_sends_the_requests_its_profile_implies(
    tmp_path: Path, echo_server: EchoServer
) -> None:
    code, report = _run(
        tmp_path, echo_server.url, {"stages": [{"from": 100, "to": 300, "duration": "2s"}], "seed": 5}
    )
    assert code == 0, report["checks"]
    assert report["summary"]["requests"] == 400  # ∫ rate dt = (100 + 300) / 2 · 2 s
    first, second = (row for row in report["timeline"] if row["phase"] == "measure")
    assert second["sent_rate"] > first["sent_rate"]  # the ramp, seen per second


def test_a_one_second_stall_shows_in_the_tail_instead_of_being_hidden(tmp_path: Path) -> None:
    """Coordinated omission: a closed-loop tool waits out the stall and records one slow sample.

    Here the generator keeps sending during the pause, and every request sent then is
    charged from its intended send time. At 200/s for 2 s with a 1 s pause, about half
    of the requests queue behind it, with latencies spread from 1 s down to 0: a
    fraction (1 - x)/2 of requests exceed x, so p99 ≈ 0.98 s before the time the
    server needs to work off the queued burst (which in practice lifts it past 1 s),
    the mean is ≈ 0.25 s, and the worst request waited the whole second.
    """
    server = EchoServer(stall_at=60, stall_s=1.0).start()  # 0.3 s into the measurement
    try:
        code, report = _run(
            tmp_path,
            server.url,
            {"arrivals": "uniform", "stages": [{"rate": 200, "duration": "2s"}], "max_lag": "100ms"},
            {"latency": {"p99": "100ms"}},
        )
    finally:
        server.stop()
    latency = report["summary"]["latency_ok_us"]
    assert code == 1
    assert latency["max_us"] >= 1_000_000, latency
    assert latency["p99_us"] >= 950_000, latency
    assert latency["mean_us"] >= 200_000, latency
    # the generator did not stall with the server: it kept sending on schedule throughout
    assert report["generator"]["lag_us"]["max_us"] < 100_000
    assert report["summary"]["requests"] == 400
    broken = [c for c in report["checks"] if not c["ok"]]
    assert [c["name"] for c in broken] == ["latency p99"]
