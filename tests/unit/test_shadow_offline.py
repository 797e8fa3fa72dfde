"""Reports from request logs and replays equal the live report on the same requests; the table reads well."""

from __future__ import annotations

import asyncio
import gzip
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engine.observability.log_reader import ReadStats, read_records
from engine.observability.request_record import tensor_json
from engine.shadow.compare import ShadowComparison, ShadowComparisons, ShadowConfig
from engine.shadow.offline import OfflineStats, replay, report_from_records, tensor_from_json
from engine.shadow.outcome import RequestShadows, shadow_field
from engine.shadow.report import ShadowReport, render_table
from engine.shadow.rules import CompareKind, CompareRule
from engine.shadow.runner import LiveResult, ShadowPool, ShadowRun

RULES = {
    "prob": CompareRule(abs_tol=0.05, rel_tol=0.1),
    "decision": CompareRule(kind=CompareKind.CLASS),
    "score": CompareRule(kind=CompareKind.SCORE, window=4),
}
# live 1 2 4 0 10 vs shadow 1.02 2.5 4 0 9 (the hand-computed set of test_shadow_compare), in 3 requests
LIVE_PROB = [[1.0, 2.0], [4.0], [0.0, 10.0]]
SHADOW_PROB = [[1.02, 2.5], [4.0], [0.0, 9.0]]
LIVE_DECISION = [[0, 1], [1], [2, 0]]
SHADOW_DECISION = [[0, 1], [0], [2, 2]]


def _arrays(i: int, which: str) -> dict[str, np.ndarray]:
    prob, decision = (LIVE_PROB, LIVE_DECISION) if which == "live" else (SHADOW_PROB, SHADOW_DECISION)
    p = np.array(prob[i], dtype=np.float32).reshape(-1, 1)
    return {"prob": p, "decision": np.array(decision[i], dtype=np.int64), "score": p * 0.5}


def _tensor(path: str, array: np.ndarray) -> dict[str, Any]:
    return tensor_json(array, 1024)


async def _live_run(log: Path, *, include_live: bool) -> ShadowReport:
    """Serve 5 requests through a pool (3 compared, 2 errors, 1 skipped); log each as the executor will."""
    comparisons, pool = ShadowComparisons(), ShadowPool(sampling="request_id")
    comparison = comparisons.add(ShadowConfig("fraud", "v2", "deep", RULES, timeout_s=30))
    skipper = comparisons.add(ShadowConfig("fraud", "v3", "", sample=0.0))

    async def broken() -> ShadowRun:
        raise ValueError("bad candidate")

    lines = []
    for i in range(5):
        results = RequestShadows()
        live = LiveResult(_arrays(i, "live"), (i + 1) * 1_000_000) if i < 3 else LiveResult({}, 0)

        async def work(i: int = i) -> ShadowRun:
            return ShadowRun(_arrays(i, "shadow"), (i + 2) * 700_000)

        pool.submit(comparison, work if i < 3 else broken, live=live, request_id=f"r{i}", results=results)
        if i == 4:
            pool.submit(skipper, work, live=live, request_id=f"r{i}", results=results)
        outcomes = await results.settled(30)
        record: dict[str, Any] = {
            "schema": "engine.request/1",
            "id": f"r{i}",
            "graph": "fraud",
            "status": "OK",
        }
        if not include_live and i < 3:
            record["nodes"] = {
                "deep": {"kind": "model", "outputs": {n: _tensor("", a) for n, a in live.outputs.items()}}
            }
        record["shadow"] = shadow_field(outcomes, _tensor, include_live=include_live)
        lines.append(json.dumps(record))
    lines.append(json.dumps({"schema": "engine.request/1", "id": "other", "graph": "other", "shadow": {}}))
    _write(log, lines)
    return comparisons.report("fraud")


def _write(log: Path, lines: list[str]) -> None:
    log.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("include_live", [True, False], ids=["live-in-entry", "live-from-nodes"])
async def test_report_from_the_log_equals_the_live_report(tmp_path: Path, include_live: bool) -> None:
    live_report = await _live_run(tmp_path / "requests-1.jsonl", include_live=include_live)
    stats, read = OfflineStats(), ReadStats()
    offline = report_from_records(read_records(tmp_path, read), stats=stats)
    assert offline == live_report
    assert offline.to_json() == live_report.to_json()
    assert (read.records, stats.used, stats.ignored, stats.unreadable) == (6, 5, 1, 0)
    counters = offline.graphs["fraud"]["v2"].counters
    assert (counters.run, counters.errors, counters.sampled) == (3, 2, 5)
    assert offline.graphs["fraud"]["v3"].counters.skipped == 1


async def test_gzipped_logs_and_graph_filter(tmp_path: Path) -> None:
    live_report = await _live_run(tmp_path / "plain.jsonl", include_live=True)
    gz = tmp_path / "zipped" / "requests-1.jsonl.gz"
    gz.parent.mkdir()
    gz.write_bytes(gzip.compress((tmp_path / "plain.jsonl").read_bytes()))
    assert report_from_records(read_records(gz.parent), graph="fraud") == live_report
    assert report_from_records(read_records(gz.parent), graph="nope").graphs == {}


def test_unsettled_entries_are_counted_apart_and_shown(tmp_path: Path) -> None:
    entries = [{"target": "deep", "status": "unsettled"}, {"target": "deep", "status": "timeout"}]
    records = [
        {"schema": "engine.request/1", "id": f"r{i}", "graph": "fraud", "status": "OK", "shadow": {"v2": e}}
        for i, e in enumerate(entries)
    ]
    _write(tmp_path / "requests-1.jsonl", [json.dumps(r) for r in records])
    report = report_from_records(read_records(tmp_path))
    counters = report.graphs["fraud"]["v2"].counters
    assert (counters.sampled, counters.unsettled, counters.timeouts, counters.run) == (2, 1, 1, 0)
    assert "unsettled 1 (logged before the shadow finished)" in render_table(report)


def test_unreadable_entries_are_counted_and_left_out() -> None:
    redacted = {"target": "", "status": "ok", "compare": {}, "outputs": {"p": {"redacted": True}}, "live": {}}
    truncated_live = {
        "target": "",
        "status": "ok",
        "compare": {},
        "outputs": {"p": {"datatype": "FP32", "shape": [1], "data": [1.0]}},
        "live": {"p": {"datatype": "FP32", "shape": [9], "data": [1.0], "truncated": True, "elements": 9}},
    }
    records = [
        {"graph": "g", "shadow": {"a": redacted, "b": truncated_live, "c": {"status": "what"}}},
        {"graph": "g", "shadow": {"d": {"target": "n", "status": "ok", "compare": {}, "outputs": {}}}},
    ]
    stats = OfflineStats()
    report = report_from_records(records, stats=stats)
    assert stats.unreadable == 4  # redacted, truncated, unknown status, node outputs not logged
    assert report.graphs == {}


def test_tensors_come_back_as_logged() -> None:
    for array in (
        np.array([[1.5, -2.25]], dtype=np.float32),
        np.array([True, False]),
        np.array([[7]], dtype=np.int64),
        np.array([b"ok", b"\xff\x00"], dtype=object),
        np.zeros((0, 3), dtype=np.float64),
    ):
        back = tensor_from_json(json.loads(json.dumps(tensor_json(array, 1024))))
        assert back.dtype == array.dtype and back.shape == array.shape
        assert back.tolist() == array.tolist()


def _replay_records() -> list[dict[str, Any]]:
    records = []
    for i, amount in enumerate([100.0, 2000.0, 50.0, 700.0, 1300.0]):
        records.append(
            {
                "graph": "fraud",
                "status": "OK",
                "latency_us": 800 + i,
                "features": {},
                "inputs": {"amount": tensor_json(np.array([[amount]], dtype=np.float32), 1024)},
                "outputs": {"score": tensor_json(np.array([[amount / 2000]], dtype=np.float32), 1024)},
            }
        )
    records.append({"graph": "fraud", "status": "INVALID_ARGUMENT", "inputs": {}, "outputs": {}})
    records.append(
        {"graph": "fraud", "status": "OK", "inputs": {"amount": {"redacted": True}}, "outputs": {}}
    )
    return records


async def test_replay_compares_a_candidate_with_the_recorded_outputs() -> None:
    seen: list[dict[str, Any] | None] = []

    async def candidate(
        inputs: dict[str, np.ndarray], features: dict[str, Any] | None
    ) -> dict[str, np.ndarray]:
        seen.append(features)
        amount = float(inputs["amount"][0, 0])
        if amount == 50.0:
            raise RuntimeError("candidate bug")
        if amount == 700.0:
            await asyncio.Event().wait()
        return {"score": np.minimum(inputs["amount"] / 1000, 1.0).astype(np.float32)}

    stats = OfflineStats()
    rules = {"score": CompareRule(abs_tol=0.1)}
    report = await replay(
        _replay_records(), candidate, graph="fraud", rules=rules, timeout_s=0.05, stats=stats, concurrency=2
    )
    summary = report.graphs["fraud"]["candidate"]
    assert (stats.records, stats.used, stats.ignored, stats.unreadable) == (7, 5, 1, 1)
    assert (summary.counters.run, summary.counters.errors, summary.counters.timeouts) == (3, 1, 1)
    assert seen == [None] * 5
    out = summary.outputs["score"]
    # recorded .05 1.0 .65 vs candidate .1 1.0 1.0: |d| .05 0 .35 -> 2 of 3 within .1
    assert (out.rows, out.agree) == (3, 2)
    assert out.abs_diff is not None and out.abs_diff.max == pytest.approx(0.35, rel=1e-6)
    assert summary.latency.live.max == 804.0
    assert summary.last_error == "RuntimeError: candidate bug"


async def test_replay_equals_live_comparison_of_the_same_pairs() -> None:
    async def candidate(
        inputs: dict[str, np.ndarray], features: dict[str, Any] | None
    ) -> dict[str, np.ndarray]:
        return {"score": (inputs["amount"] / 1500).astype(np.float32)}

    report = await replay(_replay_records()[:5], candidate, graph="fraud")
    live = ShadowComparison(ShadowConfig("fraud", "candidate", "", {}))
    for record in _replay_records()[:5]:
        amount = tensor_from_json(record["inputs"]["amount"])
        recorded = tensor_from_json(record["outputs"]["score"])
        live.observe({"score": recorded}, {"score": (amount / 1500).astype(np.float32)}, 0, 0)
    assert report.graphs["fraud"]["candidate"].outputs == live.snapshot().outputs


async def test_render_table_shows_the_figures(tmp_path: Path) -> None:
    report = await _live_run(tmp_path / "requests-1.jsonl", include_live=True)
    table = render_table(report)
    print(table)
    assert "graph fraud · shadow v2 (mirrors node deep)" in table
    assert "graph fraud · shadow v3 (mirrors the whole graph)" in table
    assert "sampled 5  run 3  skipped 0  shed 0  errors 2" in table
    prob = next(line for line in table.splitlines() if line.strip().startswith("prob"))
    # 4 of 5 rows within tolerance; |d| p50 .02, p99 = max 1; rel p99 = max 20%
    assert prob.split()[:4] == ["prob", "numeric", "5", "-"]
    assert prob.split()[4:8] == ["80.0%", "0.02", "1", "1"]
    assert prob.split()[9] == "20.0%"
    decision = next(line for line in table.splitlines() if line.strip().startswith("decision "))
    assert decision.split()[:4] == ["decision", "class", "5", "60.0%"]
    assert "confusion of decision (rows: live, columns: shadow)" in table
    matrix = table.split("confusion of decision")[1].splitlines()[1:5]
    assert matrix[0].split() == ["0", "1", "2"]
    # pairs (live, shadow): (0,0) (1,1) (1,0) (2,2) (0,2)
    assert matrix[1].split() == ["0", "1", "0", "1"]
    assert matrix[2].split() == ["1", "1", "1", "0"]
    assert matrix[3].split() == ["2", "0", "0", "1"]
    assert "last error: ValueError: bad candidate" in table
    assert render_table(ShadowReport()) == "no shadows\n"


def test_report_json_round_trip() -> None:
    c = ShadowComparison(ShadowConfig("g", "s", "n", RULES))
    c.observe(_arrays(0, "live"), _arrays(0, "shadow"), 1000, 2000)
    report = ShadowReport({"g": {"s": c.snapshot()}})
    assert ShadowReport.from_json(report.to_json()) == report
