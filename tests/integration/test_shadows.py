"""Shadow nodes on a real server: they never change the response, their failures are counted,
sampling follows the request id, and the live report, the report rebuilt from the request log
and a replay agree."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
import tritonclient.grpc as triton
from onnx import TensorProto, helper, numpy_helper

from engine import cli
from engine.protocol.client import EngineClient
from engine.protocol.generated.engine.v1 import engine_pb2 as epb
from engine.shadow.report import ShadowReport
from tests.server_thread import ServerThread

WIDTH = 4
REQUESTS = 120


def _save(graph: onnx.GraphProto, path: Path, *inits: onnx.TensorProto) -> None:
    graph.initializer.extend(inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _io() -> tuple[list[onnx.ValueInfoProto], list[onnx.ValueInfoProto]]:
    return (
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", WIDTH])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])],
    )


def _row_sum(path: Path, offset: float = 0.0) -> None:
    """y = sum(x, axis=1) + offset."""
    ins, outs = _io()
    nodes = [
        helper.make_node("MatMul", ["x", "ones"], ["s"]),
        helper.make_node("Add", ["s", "offset"], ["y"]),
    ]
    _save(
        helper.make_graph(nodes, "sum", ins, outs),
        path,
        numpy_helper.from_array(np.ones((WIDTH, 1), np.float32), "ones"),
        numpy_helper.from_array(np.float32([offset]), "offset"),
    )


def _slow(path: Path, depth: int = 1500, width: int = 256) -> None:
    """y = mean of ``depth`` chained MatMuls: tens of milliseconds per call, whatever the batch."""
    ins, outs = _io()
    names = ["h0"] + [f"h{i + 1}" for i in range(depth)]
    nodes = [helper.make_node("MatMul", ["x", "W0"], ["h0"])]
    nodes += [helper.make_node("MatMul", [names[i], "W"], [names[i + 1]]) for i in range(depth)]
    nodes.append(helper.make_node("ReduceMean", [names[-1]], ["y"], axes=[1], keepdims=1))
    _save(
        helper.make_graph(nodes, "slow", ins, outs),
        path,
        numpy_helper.from_array(np.full((WIDTH, width), 1.0 / WIDTH, np.float32), "W0"),
        numpy_helper.from_array(np.full((width, width), 1.0 / width, np.float32), "W"),
    )


def _broken(path: Path) -> None:
    """Gathers row x[0, 0] of a 4-row table: fine at warm-up (zeros), fails at run time for x[0, 0] >= 4."""
    ins, outs = _io()
    nodes = [
        helper.make_node("Slice", ["x", "zero", "one", "one"], ["first"]),  # x[:, 0:1]
        helper.make_node("Cast", ["first"], ["index"], to=TensorProto.INT64),
        helper.make_node("Gather", ["table", "index"], ["g"], axis=0),  # [N, 1, 1]
        helper.make_node("Squeeze", ["g", "one"], ["y"]),
    ]
    _save(
        helper.make_graph(nodes, "broken", ins, outs),
        path,
        numpy_helper.from_array(np.arange(4, dtype=np.float32).reshape(4, 1), "table"),
        numpy_helper.from_array(np.int64([0]), "zero"),
        numpy_helper.from_array(np.int64([1]), "one"),
    )


LIVE = """\
graph: mirror
inputs:
  x: {datatype: FP32, shape: [-1, 4]}
nodes:
  live: {model: m.onnx, inputs: {x: inputs.x}}
SHADOWS
outputs:
  y: live.y
logging:
  sample: 1.0
"""
SHADOWS = """\
  same: {shadow: live, model: same.onnx, compare: {y: {abs_tol: 0.001}}, timeout: 20s}
  off: {shadow: live, model: off.onnx, compare: {y: {abs_tol: 0.1}}, sample: 0.5, timeout: 20s}
  slow: {shadow: live, model: slow.onnx, timeout: 1ms}
  broken: {shadow: live, model: broken.onnx, timeout: 20s}
"""


@pytest.fixture(scope="module")
def repos(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two repositories serving graph 'mirror': with its four shadows, and without any."""
    root = tmp_path_factory.mktemp("shadows")
    with_shadows, without = root / "with" / "mirror", root / "without" / "mirror"
    with_shadows.mkdir(parents=True)
    _row_sum(with_shadows / "m.onnx")
    _row_sum(with_shadows / "same.onnx")
    _row_sum(with_shadows / "off.onnx", offset=0.5)
    _slow(with_shadows / "slow.onnx")
    _broken(with_shadows / "broken.onnx")
    (with_shadows / "graph.yaml").write_text(LIVE.replace("SHADOWS\n", SHADOWS))
    without.mkdir(parents=True)
    shutil.copy(with_shadows / "m.onnx", without / "m.onnx")
    (without / "graph.yaml").write_text(LIVE.replace("SHADOWS\n", ""))
    return with_shadows.parent, without.parent


def _inputs(i: int) -> np.ndarray:
    rng = np.random.default_rng(i)
    rows = 1 + i % 3
    x = rng.uniform(0, 3, size=(rows, WIDTH)).astype(np.float32)
    if i % 4 == 0:
        x[0, 0] = 50.0  # 'broken' fails on this request
    return x


def _call(client: triton.InferenceServerClient, i: int) -> np.ndarray:
    x = _inputs(i)
    tensor = triton.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    return client.infer("mirror", [tensor], request_id=f"req-{i}").as_numpy("y")


SHADOW_WAIT_S = 60
"""A record waits this long for its shadows: on a busy machine shadow threads (idle priority) lag."""


def _log_to(folder: Path) -> dict[str, object]:
    return {"sink": "jsonl", "directory": str(folder), "shadow_wait_s": SHADOW_WAIT_S}


def _records(folder: Path, count: int) -> list[dict]:  # type: ignore[type-arg]
    deadline = time.monotonic() + SHADOW_WAIT_S + 30
    records: list[dict] = []  # type: ignore[type-arg]
    while time.monotonic() < deadline:
        records = [
            json.loads(line) for f in sorted(folder.glob("*.jsonl")) for line in f.read_text().splitlines()
        ]
        if len(records) >= count:
            break
        time.sleep(0.05)
    return records


def _settled_report(url: str, graph: str, requests: int) -> epb.ShadowReportResponse:
    """The live ShadowReport once every shadow of ``graph`` has settled all ``requests``.

    A shadow finishes off the response path, so the last responses can arrive before their
    shadows have been counted; asking at once would race them.
    """
    engine = EngineClient(url)
    deadline = time.monotonic() + SHADOW_WAIT_S + 30
    try:
        while True:
            response = engine.admin(
                "ShadowReport", epb.ShadowReportRequest(graph=graph), epb.ShadowReportResponse
            )
            shadows = ShadowReport.from_json(response.json).graphs.get(graph, {})
            settled = [s.counters.sampled + s.counters.skipped for s in shadows.values()]
            if (settled and min(settled) >= requests) or time.monotonic() > deadline:
                return response
            time.sleep(0.05)
    finally:
        engine.close()


@pytest.fixture(scope="module")
def served(repos: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """Run the same requests through both repositories; keep the answers, the report and the log."""
    with_shadows, without = repos
    logs = tmp_path_factory.mktemp("logs")
    answers: dict[str, list[np.ndarray]] = {}
    with ServerThread(without) as plain:
        client = triton.InferenceServerClient(plain.url)
        answers["without"] = [_call(client, i) for i in range(REQUESTS)]
    with ServerThread(  # max_concurrency 0: no live-pressure shedding, so counts are exact
        with_shadows,
        request_log=_log_to(logs),
        shadow_queue=REQUESTS * 4,
        max_concurrency=0,
    ) as server:
        client = triton.InferenceServerClient(server.url)
        answers["with"] = [_call(client, i) for i in range(REQUESTS)]
        records = _records(logs, REQUESTS)
        response = _settled_report(server.url, "mirror", REQUESTS)
    return answers, ShadowReport.from_json(response.json), response.table, records, logs


def test_shadows_never_change_the_response(served) -> None:  # type: ignore[no-untyped-def]
    answers, *_ = served
    for i, (a, b) in enumerate(zip(answers["with"], answers["without"], strict=True)):
        np.testing.assert_array_equal(a, b, err_msg=f"request {i}")
        np.testing.assert_allclose(a[:, 0], _inputs(i).sum(axis=1), rtol=1e-6)


def _compared_rows(records: list[dict], shadow: str) -> int:  # type: ignore[type-arg]
    """Rows of the requests whose ``shadow`` ran (a shadow may be shed when live calls queue)."""
    return sum(1 + int(r["id"].split("-")[1]) % 3 for r in records if r["shadow"][shadow]["status"] == "ok")


def test_agreeing_and_disagreeing_shadows_are_measured(served) -> None:  # type: ignore[no-untyped-def]
    _, report, table, records, _ = served
    same, off = report.graphs["mirror"]["same"], report.graphs["mirror"]["off"]
    # Shadows are shed first whenever live calls queue (a busy machine): what ran is compared.
    assert same.counters.sampled == REQUESTS and same.counters.skipped == 0
    assert same.counters.run + same.counters.shed == REQUESTS and same.counters.run > 0
    rows = _compared_rows(records, "same")
    assert same.outputs["y"].rows == rows and same.outputs["y"].agree == rows
    assert same.outputs["y"].abs_diff is not None and same.outputs["y"].abs_diff.max == 0.0
    # off is y + 0.5 with abs_tol 0.1: every compared row disagrees, by 0.5
    assert off.outputs["y"].agree == 0 and off.outputs["y"].rows > 0
    assert off.outputs["y"].abs_diff is not None and off.outputs["y"].abs_diff.max == pytest.approx(
        0.5, abs=1e-5
    )
    assert "shadow same (mirrors node live)" in table and "shadow off" in table


def test_sampling_follows_the_request_id(served) -> None:  # type: ignore[no-untyped-def]
    _, report, _, records, _ = served
    chosen = {
        f"req-{i}"
        for i in range(REQUESTS)
        if int.from_bytes(hashlib.blake2b(f"req-{i}".encode(), digest_size=8).digest(), "big") / 2.0**64 < 0.5
    }
    off = report.graphs["mirror"]["off"].counters
    assert off.sampled == len(chosen) and off.skipped == REQUESTS - len(chosen)
    assert abs(len(chosen) - REQUESTS / 2) < 5 * (REQUESTS * 0.25) ** 0.5  # the hash is a fair coin
    logged = {r["id"] for r in records if r["shadow"]["off"]["status"] != "skipped"}
    assert logged == chosen


def test_failing_and_slow_shadows_are_counted_not_raised(served) -> None:  # type: ignore[no-untyped-def]
    _, report, _, records, _ = served
    broken, slow = report.graphs["mirror"]["broken"].counters, report.graphs["mirror"]["slow"].counters
    assert broken.errors + broken.run + broken.shed == broken.sampled == REQUESTS
    assert slow.run == 0 and slow.timeouts + slow.shed == slow.sampled == REQUESTS
    assert broken.errors >= 1 and slow.timeouts >= 1
    assert all(r["status"] == "OK" for r in records)
    failed = [r for r in records if r["shadow"]["broken"]["status"] == "error"]
    assert failed and all(r["id"] in {f"req-{i}" for i in range(0, REQUESTS, 4)} for r in failed)
    assert (
        "INVALID_ARGUMENT" in failed[0]["shadow"]["broken"]["error"] or failed[0]["shadow"]["broken"]["error"]
    )


def test_the_report_rebuilt_from_the_log_matches_the_live_one(served, capsys) -> None:  # type: ignore[no-untyped-def]
    _, live, _, _, logs = served
    assert cli.main(["shadow", "report", "mirror", "--from", str(logs), "--format", "json"]) == 0
    offline = ShadowReport.from_json(capsys.readouterr().out)
    for name in ("same", "off", "slow", "broken"):
        a, b = live.graphs["mirror"][name], offline.graphs["mirror"][name]
        assert a.counters == b.counters, name
        for output, stats in a.outputs.items():
            assert (stats.rows, stats.agree) == (b.outputs[output].rows, b.outputs[output].agree), name


def test_replay_through_a_candidate_graph(served, repos, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    *_, logs = served
    with_shadows, _ = repos
    candidate = tmp_path / "mirror"
    candidate.mkdir()
    shutil.copy(with_shadows / "mirror" / "off.onnx", candidate / "m.onnx")  # y + 0.5
    (candidate / "graph.yaml").write_text(LIVE.replace("SHADOWS\n", ""))
    code = cli.main(
        [
            "shadow",
            "replay",
            "--from",
            str(logs),
            "--graph",
            "mirror:1",
            "--candidate",
            str(candidate),
            "--compare",
            '{"y": {"abs_tol": 0.6}}',
            "--format",
            "json",
        ]
    )
    assert code == 0
    report = ShadowReport.from_json(capsys.readouterr().out)
    (summary,) = report.graphs["mirror"].values()
    rows = sum(1 + i % 3 for i in range(REQUESTS))
    assert summary.counters.run == REQUESTS  # a replay sheds nothing
    assert summary.outputs["y"].rows == rows and summary.outputs["y"].agree == rows  # 0.5 < 0.6
    assert summary.outputs["y"].abs_diff is not None
    assert summary.outputs["y"].abs_diff.p50 == pytest.approx(0.5, abs=0.01)


def test_bad_shadow_nodes_are_reported_at_load(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "mirror"
    folder.mkdir()
    _row_sum(folder / "m.onnx")
    _row_sum(folder / "c.onnx")
    shadows = (
        "  a: {shadow: lve, model: c.onnx}\n"
        "  b: {shadow: live, model: c.onnx, compare: {z: {abs_tol: 1}}}\n"
        "  c: {shadow: live, model: c.onnx, sample: 2}\n"
        "  d: {shadow: live, model: c.onnx, on_error: fail}\n"
        "  e: {shadow: live, model: c.onnx, compare: {y: {kind: clas}}}\n"
    )
    text = LIVE.replace("SHADOWS\n", shadows).replace("  y: live.y", "  y: live.y\n  z: e")
    (folder / "graph.yaml").write_text(text)
    assert cli.main(["validate", str(folder)]) == 1
    out = capsys.readouterr().out
    for line, message in (
        (6, "shadow 'a': unknown node 'lve'; did you mean 'live'?"),
        (7, "shadow 'b': 'live' has no output 'z' (its outputs: y)"),
        (8, "'sample' must be a share of requests greater than 0 and at most 1"),
        (9, "'on_error' does not apply; a shadow never fails or changes the response"),
        (10, "unknown kind 'clas'; expected numeric, class, score; did you mean 'class'?"),
        (13, "node 'e' is a shadow of 'live': its outputs never reach the graph"),
    ):
        assert any(f"graph.yaml:{line}:" in row and message in row for row in out.splitlines()), (line, out)


def test_only_disagreements_are_logged_when_asked(repos: tuple[Path, Path], tmp_path: Path) -> None:
    with_shadows, _ = repos
    root = tmp_path / "repo"
    shutil.copytree(with_shadows, root)
    graph = root / "mirror" / "graph.yaml"
    text = graph.read_text().replace("  sample: 1.0\n", "  sample: 0\n  always_on: [shadow_disagreement]\n")
    for name in ("slow", "broken"):  # keep 'same' (always agrees) and 'off' (always disagrees)
        text = "".join(line for line in text.splitlines(keepends=True) if not line.startswith(f"  {name}:"))
    graph.write_text(text)
    logs = tmp_path / "logs"
    # No concurrency limit: nothing measures live pressure, so no shadow is shed on a busy machine.
    with ServerThread(root, request_log=_log_to(logs), max_concurrency=0) as server:
        client = triton.InferenceServerClient(server.url)
        for i in range(24):
            _call(client, i)
        response = _settled_report(server.url, "mirror", 24)
    ran = ShadowReport.from_json(response.json).graphs["mirror"]["off"].counters.run
    records = _records(logs, ran)
    assert ran > 0, ShadowReport.from_json(response.json).graphs["mirror"]
    assert len(records) == ran  # 'off' always disagrees when it runs; 'same' never does
    assert {r["sampled_because"] for r in records} == {"shadow_disagreement"}
    assert all(r["shadow"]["off"]["agree"]["y"]["agree"] == 0 for r in records)


def test_a_whole_graph_mirrors_another_and_replay_agrees(
    repos: tuple[Path, Path], tmp_path: Path, capsys
) -> None:  # type: ignore[no-untyped-def]
    with_shadows, without = repos
    root = tmp_path / "repo"
    shutil.copytree(without, root)  # 'mirror' without node shadows
    (root / "mirror" / "graph.yaml").write_text(
        LIVE.replace("SHADOWS\n", "").replace("sample: 1.0", "sample: 1.0\n  nodes: true")
    )
    candidate = root / "mirror_next"
    candidate.mkdir()
    shutil.copy(with_shadows / "mirror" / "off.onnx", candidate / "m.onnx")  # y + 0.5
    (candidate / "graph.yaml").write_text(
        LIVE.replace(
            "graph: mirror", "graph: mirror_next\nshadow_of: {graph: mirror, compare: {y: {abs_tol: 0.1}}}"
        )
        .replace("SHADOWS\n", "")
        .replace("logging:\n  sample: 1.0\n", "")
    )
    logs = tmp_path / "logs"
    n = 30
    with ServerThread(root, request_log=_log_to(logs), max_concurrency=0) as server:
        client = triton.InferenceServerClient(server.url)
        answers = [_call(client, i) for i in range(n)]
        response = _settled_report(server.url, "mirror", n)
        _records(logs, n)
    for i, answer in enumerate(answers):  # the response is the live graph's
        np.testing.assert_allclose(answer[:, 0], _inputs(i).sum(axis=1), rtol=1e-6)
    live = ShadowReport.from_json(response.json).graphs["mirror"]["mirror_next"]
    rows = sum(1 + i % 3 for i in range(n))
    assert live.target == "" and live.counters.run == n
    assert live.outputs["y"].rows == rows and live.outputs["y"].agree == 0
    assert live.outputs["y"].abs_diff is not None and live.outputs["y"].abs_diff.max == pytest.approx(
        0.5, abs=1e-5
    )
    code = cli.main(
        [
            "shadow",
            "replay",
            "--from",
            str(logs),
            "--graph",
            "mirror",
            "--candidate",
            str(candidate),
            "--compare",
            '{"y": {"abs_tol": 0.1}}',
            "--format",
            "json",
        ]
    )
    assert code == 0
    (replayed,) = ShadowReport.from_json(capsys.readouterr().out).graphs["mirror"].values()
    assert replayed.counters.run == live.counters.run
    assert (replayed.outputs["y"].rows, replayed.outputs["y"].agree) == (rows, 0)
    assert replayed.outputs["y"].abs_diff == live.outputs["y"].abs_diff  # the same rows, the same differences
