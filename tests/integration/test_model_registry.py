"""Models from a real MLflow registry: served by reference, an alias move picked up by a reload,
and a registry that goes down never stopping the version that serves.

One MLflow tracking server (SQLite, proxied artifacts) for the module; the quickstart's models are
registered in it with the mlflow client. The graph ``registry_qs`` is the quickstart with its models
named ``models:/qs-scaler/1`` and ``models:/qs-classifier@champion``; the plain ``quickstart`` graph
served beside it gives the expected numbers.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
import tritonclient.grpc as triton
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from tritonclient.utils import InferenceServerException

from tests.integration.mlflow_registry import MlflowServer, flipped
from tests.integration.test_lifecycle import SERVING, EngineProcess
from tests.server_thread import ServerThread

QUICKSTART = Path(__file__).resolve().parents[2] / "graphs" / "quickstart"
REGISTRY_GRAPH = """\
graph: registry_qs
version: 1
inputs:
  x: {datatype: FP32, shape: [-1, 4]}
nodes:
  embed:
    model: models:/qs-scaler/1
    inputs: {x: inputs.x}
  clipped:
    transform: expr
    expr: "clip(embed.z, -3, 3)"
  classify:
    model: models:/qs-classifier@champion
    inputs: {x: clipped}
outputs:
  prob: classify.prob
logging: {sample: 1.0}
"""
SHADOW_GRAPH = """\
graph: registry_shadow
inputs:
  x: {datatype: FP32, shape: [-1, 4]}
nodes:
  embed: {model: scaler.onnx, inputs: {x: inputs.x}}
  classify: {model: classifier.onnx, inputs: {x: embed.z}}
  challenger:
    shadow: classify
    model: models:/qs-classifier/2
    compare: {prob: {abs_tol: 0.01}}
outputs:
  prob: classify.prob
"""


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    server = MlflowServer(tmp_path_factory.mktemp("mlflow")).start()
    try:
        server.register("qs-scaler", onnx.load(str(QUICKSTART / "scaler.onnx")))
        first = server.register("qs-classifier", onnx.load(str(QUICKSTART / "classifier.onnx")))
        server.register("qs-classifier", flipped(QUICKSTART / "classifier.onnx", "prob"))
        server.set_alias("qs-classifier", "champion", first)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def graphs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("graphs")
    shutil.copytree(QUICKSTART, root / "quickstart")
    (root / "registry_qs").mkdir()
    (root / "registry_qs" / "graph.yaml").write_text(REGISTRY_GRAPH)
    (
        root / "registry_shadow"
    ).mkdir()  # the live classifier from the folder, its challenger from the registry
    shutil.copy(QUICKSTART / "scaler.onnx", root / "registry_shadow" / "scaler.onnx")
    shutil.copy(QUICKSTART / "classifier.onnx", root / "registry_shadow" / "classifier.onnx")
    (root / "registry_shadow" / "graph.yaml").write_text(SHADOW_GRAPH)
    return root


@pytest.fixture(scope="module")
def served(
    registry: MlflowServer, graphs: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerThread]:
    cache = tmp_path_factory.mktemp("model-cache")
    logs = tmp_path_factory.mktemp("request-log")
    with ServerThread(
        graphs,
        model_registry={"mlflow": {"tracking_uri": registry.url}},
        model_cache=str(cache),
        request_log={"sink": "jsonl", "directory": str(logs)},
        span_exporter=InMemorySpanExporter(),
        trace_sample_ratio=1.0,
    ) as running:
        yield running


@pytest.fixture(scope="module")
def client(served: ServerThread) -> Iterator[triton.InferenceServerClient]:
    c = triton.InferenceServerClient(served.url)
    yield c
    c.close()


def _prob(client: triton.InferenceServerClient, graph: str, x: np.ndarray) -> np.ndarray:
    tensor = triton.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    result = client.infer(graph, [tensor])
    prob = result.as_numpy("prob")
    assert prob is not None
    return prob


ROWS = np.random.default_rng(7).normal(size=(16, 4)).astype(np.float32)


def test_a_registry_graph_serves_the_registered_models(client: triton.InferenceServerClient) -> None:
    assert client.is_model_ready("registry_qs")
    expected = _prob(client, "quickstart", ROWS)
    np.testing.assert_allclose(_prob(client, "registry_qs", ROWS), expected, rtol=1e-6)


def test_the_cache_holds_each_model_under_its_digest(served: ServerThread) -> None:
    assert served.server is not None
    live = served.server.repository.get("registry_qs")
    assert live.sources == {"embed": "models:/qs-scaler/1", "classify": "models:/qs-classifier/1"}
    cached = {p.stem: p for p in Path(served.settings.model_cache).glob("sha256/*.onnx")}
    assert {live.models["embed"], live.models["classify"]} <= set(cached)
    for digest, path in cached.items():  # content-addressed: every file is named by its own digest
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest


def test_a_shadow_candidate_comes_from_the_registry_and_is_compared(
    client: triton.InferenceServerClient, served: ServerThread
) -> None:
    assert served.server is not None
    live = served.server.repository.get("registry_shadow")
    assert live.sources == {"challenger": "models:/qs-classifier/2"}
    assert "lineage.challenger.sha256" not in live.lineage  # a shadow never shapes the answer
    expected = _prob(client, "quickstart", ROWS)
    np.testing.assert_allclose(_prob(client, "registry_shadow", ROWS), expected, rtol=1e-6)
    comparisons = served.server.repository.comparisons

    def compared() -> int:  # candidate runs that finished and were compared with the live answer
        ours = [c for c in comparisons.state("registry_shadow") if c["shadow"] == "challenger"]
        return sum(c["counts"]["ok"] for c in ours)

    deadline = time.monotonic() + 10
    while not compared() and time.monotonic() < deadline:  # shadows run off the response path
        time.sleep(0.05)
    assert compared()


def test_a_moved_alias_is_served_after_a_reload(
    registry: MlflowServer, client: triton.InferenceServerClient, served: ServerThread
) -> None:
    before = _prob(client, "registry_qs", ROWS)
    registry.set_alias("qs-classifier", "champion", "2")
    client.load_model("registry_qs")  # RepositoryModelLoad: the folder is unchanged, the alias moved
    after = _prob(client, "registry_qs", ROWS)
    np.testing.assert_allclose(after, 1.0 - before, rtol=1e-5)
    assert served.server is not None
    assert served.server.repository.get("registry_qs").sources["classify"] == "models:/qs-classifier/2"
    registry.set_alias("qs-classifier", "champion", "1")
    client.load_model("registry_qs")
    np.testing.assert_allclose(_prob(client, "registry_qs", ROWS), before, rtol=1e-6)


def _engine(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args], capture_output=True, text=True, timeout=60, check=False
    )


def _infer_with_lineage(client: triton.InferenceServerClient, request_id: str) -> dict[str, str]:
    tensor = triton.InferInput("x", list(ROWS.shape), "FP32")
    tensor.set_data_from_numpy(ROWS)
    result = client.infer("registry_qs", [tensor], request_id=request_id, parameters={"lineage": True})
    response = result.get_response()
    assert response.model_version == "1"
    return {k: v.string_param for k, v in response.parameters.items()}


def test_a_response_names_the_models_behind_it_when_asked(
    client: triton.InferenceServerClient, served: ServerThread
) -> None:
    assert served.server is not None
    live = served.server.repository.get("registry_qs")
    assert _infer_with_lineage(client, "lineage-asked") == {
        "lineage.embed.sha256": live.models["embed"],
        "lineage.embed.source": "models:/qs-scaler/1",
        "lineage.classify.sha256": live.models["classify"],
        "lineage.classify.source": "models:/qs-classifier/1",
    }
    tensor = triton.InferInput("x", list(ROWS.shape), "FP32")
    tensor.set_data_from_numpy(ROWS)
    plain = client.infer("registry_qs", [tensor]).get_response()
    assert not [k for k in plain.parameters if k.startswith("lineage.")]  # only when asked


def test_the_request_record_and_spans_carry_the_registry_versions(
    client: triton.InferenceServerClient, served: ServerThread
) -> None:
    _infer_with_lineage(client, "lineage-record")
    folder = Path(served.settings.request_log["directory"])
    record = _wait_for_record(folder, "lineage-record")
    assert record["model_sources"] == {"embed": "models:/qs-scaler/1", "classify": "models:/qs-classifier/1"}
    classify = _wait_for_span(served.span_exporter, "node classify")
    assert classify.attributes["engine.model.source"] == "models:/qs-classifier/1"
    assert classify.attributes["engine.model.sha256"] == record["models"]["classify"]
    shown = _engine("lineage", "request", "lineage-record", "--log", str(folder))
    assert shown.returncode == 0, shown.stderr
    assert "graph registry_qs version 1" in shown.stdout
    assert f"{record['models']['classify']}  models:/qs-classifier/1" in shown.stdout


def _wait_for_span(exporter: InMemorySpanExporter, name: str) -> ReadableSpan:
    """A finished span called ``name`` (spans are exported off the request path, in batches)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = [s for s in exporter.get_finished_spans() if s.name == name]
        if found:
            return found[-1]
        time.sleep(0.05)
    raise AssertionError(f"no span {name!r} was exported")


def _wait_for_record(folder: Path, request_id: str) -> dict[str, object]:
    """The record of ``request_id`` once the sink wrote it (records are written off the request path)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for path in folder.rglob("*.jsonl"):
            for line in path.read_text().splitlines():
                if line.strip() and (record := json.loads(line)).get("id") == request_id:
                    return dict(record)
        time.sleep(0.05)
    raise AssertionError(f"no record of {request_id} in {folder}")


def test_engine_lineage_finds_every_served_node_using_a_model(served: ServerThread) -> None:
    assert served.server is not None
    digest = served.server.repository.get("registry_qs").models["classify"]
    by_name = _engine("lineage", "model", "models:/qs-classifier", "--json", "--url", served.url)
    assert by_name.returncode == 0, by_name.stderr
    uses = [json.loads(line) for line in by_name.stdout.splitlines()]
    assert sorted((u["graph"], u["node"], u["kind"], u["model"], u["source"]) for u in uses) == [
        ("registry_qs", "classify", "model", "models:/qs-classifier@champion", "models:/qs-classifier/1"),
        ("registry_shadow", "challenger", "shadow", "models:/qs-classifier/2", "models:/qs-classifier/2"),
    ]
    # the same bytes served from graph folders and from the registry: a digest finds them all
    by_digest = _engine("lineage", "model", digest[:12], "--json", "--url", served.url)
    found = sorted((u["graph"], u["node"]) for u in map(json.loads, by_digest.stdout.splitlines()))
    assert found == [("quickstart", "classify"), ("registry_qs", "classify"), ("registry_shadow", "classify")]
    unused = _engine("lineage", "model", "models:/nobody", "--url", served.url)
    assert (unused.returncode, unused.stdout.strip()) == (1, "no served graph uses model 'models:/nobody'")


def test_a_polling_server_serves_a_moved_alias_by_itself(
    registry: MlflowServer, graphs: Path, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(graphs / "registry_qs", repo / "registry_qs")
    with ServerThread(
        repo,
        model_registry={"mlflow": {"tracking_uri": registry.url}},
        model_cache=str(tmp_path / "cache"),
        reload_interval_s=0.2,
    ) as polling:
        fresh = triton.InferenceServerClient(polling.url)
        try:
            before = _prob(fresh, "registry_qs", ROWS)
            registry.set_alias("qs-classifier", "champion", "2")
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:  # no reload is asked for: the poll sees the alias move
                if np.allclose(_prob(fresh, "registry_qs", ROWS), 1.0 - before, atol=1e-5):
                    break
                time.sleep(0.1)
            np.testing.assert_allclose(_prob(fresh, "registry_qs", ROWS), 1.0 - before, atol=1e-5)
        finally:
            registry.set_alias("qs-classifier", "champion", "1")
            fresh.close()


def test_an_unknown_alias_fails_the_load_naming_it_and_the_old_version_serves(
    client: triton.InferenceServerClient, graphs: Path
) -> None:
    path = graphs / "registry_qs" / "graph.yaml"
    path.write_text(REGISTRY_GRAPH.replace("@champion", "@nosuch"))
    try:
        with pytest.raises(InferenceServerException) as failure:
            client.load_model("registry_qs")
        assert "models:/qs-classifier@nosuch" in str(failure.value)
        assert "no alias 'nosuch'" in str(failure.value)
        np.testing.assert_allclose(
            _prob(client, "registry_qs", ROWS), _prob(client, "quickstart", ROWS), rtol=1e-6
        )
    finally:
        path.write_text(REGISTRY_GRAPH)
        client.load_model("registry_qs")


def test_every_worker_of_a_fleet_serves_the_moved_alias_after_one_reload(
    registry: MlflowServer, graphs: Path, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(graphs / "registry_qs", repo / "registry_qs")
    (repo / "engine.yaml").write_text(
        f"model_registry: {{mlflow: {{tracking_uri: '{registry.url}'}}}}\nmodel_cache: {tmp_path / 'cache'}\n"
    )
    checked = _engine("validate", str(repo))  # the repository's engine.yaml names the registry
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "0 error(s)" in checked.stdout
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"127.0.0.1:{port}"
    engine = EngineProcess(str(repo), "--port", str(port), "--workers", "2")

    def answers() -> set[bytes]:  # fresh connections land on either worker
        seen = set()
        for _ in range(12):
            fresh = triton.InferenceServerClient(url)
            try:
                seen.add(_prob(fresh, "registry_qs", ROWS).round(5).tobytes())
            finally:
                fresh.close()
        return seen

    try:
        engine.wait_for(SERVING, count=2)
        (before,) = answers()
        registry.set_alias("qs-classifier", "champion", "2")
        reloaded = _engine("reload", "registry_qs", "--url", url)
        assert reloaded.returncode == 0, reloaded.stdout + reloaded.stderr
        (after,) = answers()  # one answer from every worker, and it is the new model's
        flipped_back = 1.0 - np.frombuffer(after, dtype=np.float32)
        np.testing.assert_allclose(flipped_back, np.frombuffer(before, dtype=np.float32), atol=2e-5)
    finally:
        registry.set_alias("qs-classifier", "champion", "1")
        engine.proc.send_signal(signal.SIGTERM)
        assert engine.proc.wait(30) == 0
        engine.stop()


def test_a_registry_that_is_down_never_stops_the_serving_version(
    registry: MlflowServer, client: triton.InferenceServerClient, served: ServerThread, graphs: Path
) -> None:
    """Last in the module: it stops the registry."""
    expected = _prob(client, "quickstart", ROWS)
    registry.stop()
    # Nothing changed but the registry is gone: the alias is taken as what it last named (cached),
    # so the reload has nothing to swap and the version keeps serving.
    client.load_model("registry_qs")
    assert client.is_model_ready("registry_qs")
    np.testing.assert_allclose(_prob(client, "registry_qs", ROWS), expected, rtol=1e-6)
    # A new version that needs something the registry was never asked about fails, naming it.
    path = graphs / "registry_qs" / "graph.yaml"
    path.write_text(REGISTRY_GRAPH.replace("@champion", "@challenger"))
    try:
        with pytest.raises(InferenceServerException) as failure:
            client.load_model("registry_qs")
        assert "models:/qs-classifier@challenger" in str(failure.value)
        assert "registry unreachable" in str(failure.value)
        assert "127.0.0.1" not in str(failure.value)  # no addresses in messages
        np.testing.assert_allclose(_prob(client, "registry_qs", ROWS), expected, rtol=1e-6)
    finally:
        path.write_text(REGISTRY_GRAPH)
    # A server started while the registry is down (a restarted worker or pod) serves what the
    # others serve: the cached version the alias last named.
    with ServerThread(
        graphs,
        model_registry=served.settings.model_registry,
        model_cache=served.settings.model_cache,
    ) as restarted:
        fresh = triton.InferenceServerClient(restarted.url)
        try:
            np.testing.assert_allclose(_prob(fresh, "registry_qs", ROWS), expected, rtol=1e-6)
        finally:
            fresh.close()
