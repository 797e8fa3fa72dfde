"""Hot reload against a real server: atomic swaps under traffic, rejected versions, numbered
versions, unload/load and new folders, all called as users do (tritonclient.grpc, engine.v1).
"""

from __future__ import annotations

import gc
import re
import shutil
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as triton
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.utils import InferenceServerException

from engine.protocol.client import EngineClient
from engine.protocol.generated.engine.v1 import engine_pb2 as epb
from tests import fraud_example as fraud
from tests.adapters.proxy import stalling_store
from tests.integration.held_graph import held_graph, held_inputs, held_repository
from tests.server_thread import ServerThread

AMOUNT = np.array([[50.0], [5000.0], [900.0]], dtype=np.float32)
USER_ID = fraud.user_ids("u0001", "u0108", "nobody")  # two rows of graphs/fraud/users.csv, one unknown
TXN = np.array([[0.1, 0, 14], [0.9, 1, 3], [0.5, 1, 23]], dtype=np.float32)
X = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], dtype=np.float32)
LOCATION = re.compile(r"graph\.yaml:\d+:\d+")


# --- helpers ------------------------------------------------------------------------------------


def fraud_inputs() -> list[triton.InferInput]:
    amount = triton.InferInput("amount", list(AMOUNT.shape), "FP32")
    amount.set_data_from_numpy(AMOUNT)
    user_id = triton.InferInput("user_id", list(USER_ID.shape), "BYTES")
    user_id.set_data_from_numpy(USER_ID)
    txn = triton.InferInput("txn", list(TXN.shape), "FP32")
    txn.set_data_from_numpy(TXN)
    return [amount, user_id, txn]


def quickstart_inputs() -> list[triton.InferInput]:
    x = triton.InferInput("x", list(X.shape), "FP32")
    x.set_data_from_numpy(X)
    return [x]


def set_fraud_version(folder: Path, version: int, threshold: float) -> None:
    """Rewrite fraud's graph.yaml as ``version`` with the decision threshold ``threshold``."""
    path = folder / "graph.yaml"
    text = path.read_text()
    text = re.sub(r"(?m)^version: .*$", f"version: {version}", text)
    text = re.sub(r"(?m)^(    value: ).*$", rf"\g<1>{threshold}", text)
    path.write_text(text)


def status_of(exc: InferenceServerException) -> str:
    return str(exc.status()).removeprefix("StatusCode.")


def admin(url: str, method: str, request, response_type):  # type: ignore[no-untyped-def]
    client = EngineClient(url)
    try:
        return client.admin(method, request, response_type)
    finally:
        client.close()


def describe(url: str, name: str) -> epb.DescribeGraphResponse:
    return admin(url, "DescribeGraph", epb.DescribeGraphRequest(name=name), epb.DescribeGraphResponse)


def summary(url: str, name: str) -> epb.GraphSummary:
    listed = admin(url, "ListGraphs", epb.ListGraphsRequest(), epb.ListGraphsResponse)
    return next(g for g in listed.graphs if g.name == name)


def index_reasons(client: triton.InferenceServerClient) -> dict[str, str]:
    return {m.name: m.reason for m in client.get_model_repository_index().models}


def graph_health(url: str, service: str, expected: str) -> str:
    """grpc.health.v1 status of ``service`` once it is ``expected`` (it follows a swap
    asynchronously), or the last status seen after a generous wait."""
    deadline = time.monotonic() + 10
    with grpc.insecure_channel(url) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            if status == expected or time.monotonic() > deadline:
                return status
            time.sleep(0.01)


def copy_graph(example_graphs: Path, name: str, target: Path) -> Path:
    shutil.copytree(example_graphs / name, target, ignore=shutil.ignore_patterns("README.md"))
    return target


# --- fixtures -----------------------------------------------------------------------------------


@pytest.fixture
def repo(tmp_path: Path, example_graphs: Path) -> Path:
    root = tmp_path / "graphs"
    copy_graph(example_graphs, "fraud", root / "fraud")
    return root


@pytest.fixture
def served(repo: Path) -> Iterator[ServerThread]:
    with ServerThread(repo, feature_sources=fraud.feature_sources()) as running:
        yield running


@pytest.fixture
def client(served: ServerThread) -> Iterator[triton.InferenceServerClient]:
    c = triton.InferenceServerClient(served.url)
    yield c
    c.close()


# --- reload under traffic -----------------------------------------------------------------------


def test_reloads_under_traffic_swap_atomically_with_no_errors(
    repo: Path, served: ServerThread, client: triton.InferenceServerClient
) -> None:
    """Odd versions decide with threshold 0 (every row True), even ones with 2 (every row False):
    each response must carry one version's number and that version's decisions."""
    baseline = client.infer("fraud", fraud_inputs())
    scores = baseline.as_numpy("score")
    assert scores is not None and np.all((scores > 0) & (scores < 1))

    seen: list[tuple[str, np.ndarray, np.ndarray]] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def traffic() -> None:
        traffic_client = triton.InferenceServerClient(served.url)
        try:
            while not stop.is_set():
                result = traffic_client.infer("fraud", fraud_inputs(), client_timeout=30)
                seen.append(
                    (
                        result.get_response().model_version,
                        result.as_numpy("score"),
                        result.as_numpy("decision"),
                    )
                )
        except BaseException as exc:  # recorded and asserted on below
            errors.append(exc)
        finally:
            traffic_client.close()

    senders = [threading.Thread(target=traffic) for _ in range(2)]
    for sender in senders:
        sender.start()
    try:
        for version in range(2, 18):
            set_fraud_version(repo / "fraud", version, threshold=0.0 if version % 2 else 2.0)
            client.load_model("fraud")
            assert client.get_model_metadata("fraud").versions == [str(version)]
            after = client.infer("fraud", fraud_inputs())  # the swap is done when load returns
            assert after.get_response().model_version == str(version)
    finally:
        stop.set()
        for sender in senders:
            sender.join(30)

    assert errors == []
    assert len(seen) > 12
    versions_seen = {version for version, _, _ in seen}
    assert len(versions_seen) > 2, versions_seen
    for version, score, decision in seen:
        np.testing.assert_array_equal(score, scores)  # the models never changed
        expected = np.full(decision.shape, version != "1" and int(version) % 2 == 1)
        if version == "1":
            expected = scores >= 0.5
        np.testing.assert_array_equal(decision, expected, err_msg=f"version {version}")

    final = client.infer("fraud", fraud_inputs())
    assert final.get_response().model_version == "17"
    assert client.get_model_metadata("fraud").versions == ["17"]
    listed = summary(served.url, "fraud")
    assert (listed.version, list(listed.versions), listed.state) == ("17", ["17"], "READY")
    gc.collect()  # the replaced versions released their models: one session per model file
    assert open_sessions(served) == FRAUD_SESSIONS


FRAUD_SESSIONS = 4  # ip_risk, deep, light and deep_v2 (the shadow candidate): one session per model file


def test_replaced_versions_are_freed_without_the_cycle_collector(
    repo: Path, served: ServerThread, client: triton.InferenceServerClient
) -> None:
    """`engine serve` freezes its start-up heap (engine.server.freeze_startup_heap), so the first
    version is never walked by the cyclic GC again: every replaced version, that one included, must
    go by reference counting alone once its calls are done, or versions pile up across reloads."""
    assert served.server is not None
    repository = served.server.repository
    client.infer("fraud", fraud_inputs())
    replaced = [weakref.ref(repository.get("fraud"))]
    gc.collect()
    gc.disable()
    try:
        for version in range(2, 7):
            set_fraud_version(repo / "fraud", version, threshold=0.5)
            client.load_model("fraud")
            client.infer("fraud", fraud_inputs())  # served (and logged) by the new version
            replaced.append(weakref.ref(repository.get("fraud")))
        alive = [ref() is not None for ref in replaced]
    finally:
        gc.enable()
    assert alive == [False] * 5 + [True]


def open_sessions(served: ServerThread) -> int:
    assert served.server is not None
    return int(served.server.runtimes.open_sessions)  # type: ignore[attr-defined]


def test_swapping_a_model_file_serves_the_new_model_and_releases_the_old_one(
    repo: Path, served: ServerThread, client: triton.InferenceServerClient
) -> None:
    before = client.infer("fraud", fraud_inputs()).as_numpy("score")
    assert before is not None and open_sessions(served) == FRAUD_SESSIONS
    shutil.copyfile(repo / "fraud" / "light.onnx", repo / "fraud" / "deep.onnx")
    client.load_model("fraud")

    after = client.infer("fraud", fraud_inputs()).as_numpy("score")
    assert after is not None
    x = fraud.build_models().fraud_x(AMOUNT, np.concatenate([fraud.user_features(USER_ID), TXN], axis=1))
    prob = {
        name: ort.InferenceSession(str(repo / "fraud" / f"{name}.onnx")).run(["prob"], {"x": x})[0]
        for name in ("ip_risk", "light")
    }
    np.testing.assert_allclose(after, (prob["ip_risk"] + prob["light"]) / 2, rtol=1e-5)
    routed_deep = (AMOUNT > 1000).ravel()
    np.testing.assert_array_equal(after[~routed_deep], before[~routed_deep])
    assert not np.allclose(after[routed_deep], before[routed_deep])
    gc.collect()
    assert open_sessions(served) == FRAUD_SESSIONS


def test_a_call_in_flight_finishes_on_the_version_it_started_on(tmp_path: Path) -> None:
    """The old version's models stay open until the calls holding it are done.

    The call is held in flight by its feature fetch, through a proxy that stops forwarding to
    Redis: its model runs only after the reload has finished, whatever the machine's speed.
    """
    with stalling_store(6379) as (proxy, proxy_loop):
        root = tmp_path / "graphs"
        folder = held_repository(root, proxy.port)  # version 1: y = 1
        results: list[triton.InferResult] = []
        errors: list[BaseException] = []

        def call(url: str) -> None:
            call_client = triton.InferenceServerClient(url)
            try:
                results.append(call_client.infer("held", held_inputs(), client_timeout=60))
            except BaseException as exc:  # asserted on below
                errors.append(exc)
            finally:
                call_client.close()

        with ServerThread(root) as running:
            client = triton.InferenceServerClient(running.url)
            try:
                call(running.url)  # connected to the store, warmed up
                assert errors == [] and results.pop().as_numpy("y").tolist() == [[1.0], [1.0]]
                proxy_loop.soon(proxy.stall)
                caller = threading.Thread(target=call, args=(running.url,))
                caller.start()
                deadline = time.monotonic() + 30
                while running.server.state.in_flight == 0 and time.monotonic() < deadline:  # type: ignore[union-attr]
                    time.sleep(0.01)
                assert running.server.state.in_flight == 1  # type: ignore[union-attr]
                held_graph(folder, version=2, scale=2.0)
                client.load_model("held")
                assert caller.is_alive()  # still waiting on the store, holding version 1
                assert open_sessions(running) == 2  # the old version's model stays open for it
                proxy_loop.soon(proxy.resume)
                caller.join(60)

                assert errors == []
                (old,) = results
                assert old.get_response().model_version == "1"
                np.testing.assert_array_equal(old.as_numpy("y"), [[1.0], [1.0]])  # v1's scale
                call(running.url)
                new = results.pop()
                assert new.get_response().model_version == "2"
                np.testing.assert_array_equal(new.as_numpy("y"), [[2.0], [2.0]])
                gc.collect()
                assert open_sessions(running) == 1
            finally:
                client.close()


# --- a broken new version is rejected -----------------------------------------------------------


def _break_yaml(folder: Path) -> None:
    path = folder / "graph.yaml"
    path.write_text(path.read_text().replace("  x:\n    transform: concat", "  x:\n    transform: [concat"))


def _unknown_reference(folder: Path) -> None:
    path = folder / "graph.yaml"
    path.write_text(
        path.read_text().replace(
            "inputs: [ip_risk.prob, risk_route.prob]", "inputs: [ip_risk.prob, nowhere.prob]"
        )
    )


def _missing_model(folder: Path) -> None:
    (folder / "deep.onnx").unlink()


@pytest.mark.parametrize(
    ("breakage", "expected"),
    [
        (_break_yaml, ""),
        (_unknown_reference, "nowhere"),
        (_missing_model, "deep.onnx"),
    ],
    ids=["bad-yaml", "unknown-reference", "missing-model-file"],
)
def test_broken_version_is_rejected_and_the_old_one_keeps_serving(
    repo: Path, served: ServerThread, client: triton.InferenceServerClient, breakage, expected: str
) -> None:
    before = client.infer("fraud", fraud_inputs())
    set_fraud_version(repo / "fraud", 2, threshold=0.0)
    breakage(repo / "fraud")

    with pytest.raises(InferenceServerException) as raised:
        client.load_model("fraud")
    assert status_of(raised.value) == "FAILED_PRECONDITION"
    message = raised.value.message()
    assert LOCATION.search(message), message
    assert expected in message

    after = client.infer("fraud", fraud_inputs())
    assert after.get_response().model_version == "1"
    for name in ("score", "decision"):
        np.testing.assert_array_equal(after.as_numpy(name), before.as_numpy(name))
    assert client.is_model_ready("fraud")
    assert client.get_model_metadata("fraud").versions == ["1"]

    listed = summary(served.url, "fraud")
    assert (listed.version, listed.state) == ("1", "READY")
    assert LOCATION.search(listed.last_error) and expected in listed.last_error, listed.last_error


def test_repository_index_carries_the_rejected_versions_error(
    repo: Path, client: triton.InferenceServerClient
) -> None:
    _unknown_reference(repo / "fraud")
    with pytest.raises(InferenceServerException):
        client.load_model("fraud")
    reason = index_reasons(client)["fraud"]
    assert LOCATION.search(reason) and "nowhere" in reason, reason
    rows = [
        (m.version, m.state, m.reason)
        for m in client.get_model_repository_index().models
        if m.name == "fraud"
    ]
    serving, rejected = rows  # the rejected copy has its own row; the serving version is not blamed
    assert serving == ("1", "READY", "")
    assert rejected[:2] == ("", "UNAVAILABLE") and "nowhere" in rejected[2]


def test_fixing_a_rejected_version_clears_its_error(
    repo: Path, served: ServerThread, client: triton.InferenceServerClient
) -> None:
    original = (repo / "fraud" / "graph.yaml").read_text()
    _unknown_reference(repo / "fraud")
    with pytest.raises(InferenceServerException):
        client.load_model("fraud")
    assert summary(served.url, "fraud").last_error

    (repo / "fraud" / "graph.yaml").write_text(original)
    set_fraud_version(repo / "fraud", 2, threshold=0.5)
    client.load_model("fraud")
    assert client.infer("fraud", fraud_inputs()).get_response().model_version == "2"
    assert summary(served.url, "fraud").last_error == ""
    assert index_reasons(client)["fraud"] == ""


def test_describe_graph_shows_the_serving_version_and_the_rejected_ones_error(
    repo: Path, served: ServerThread, client: triton.InferenceServerClient
) -> None:
    _unknown_reference(repo / "fraud")
    with pytest.raises(InferenceServerException):
        client.load_model("fraud")
    described = describe(served.url, "fraud")
    assert (described.name, described.version, described.state) == ("fraud", "1", "READY")
    assert LOCATION.search(described.last_error) and "nowhere" in described.last_error
    assert {n.name for n in described.nodes} >= {"x", "ip_risk", "risk_route", "deep", "light", "score"}


# --- several numbered versions ------------------------------------------------------------------


@pytest.fixture
def versioned(tmp_path: Path, example_graphs: Path) -> Path:
    """quickstart as two numbered versions; version 2 also serves the clipped embedding."""
    root = tmp_path / "graphs"
    for version in (1, 2):
        folder = copy_graph(example_graphs, "quickstart", root / "quickstart" / str(version))
        text = (folder / "graph.yaml").read_text().replace("version: 1", f"version: {version}")
        if version == 2:
            text = text.replace("  z: embed.z\n", "  z: embed.z\n  clipped: clipped\n")
        (folder / "graph.yaml").write_text(text)
    return root


def test_numbered_versions_are_selected_by_model_version(versioned: Path) -> None:
    with ServerThread(versioned) as running:
        client = triton.InferenceServerClient(running.url)
        try:
            assert client.get_model_metadata("quickstart").versions == ["1", "2"]
            outputs = {}
            for asked, served_version in (("1", "1"), ("2", "2"), ("", "2")):
                result = client.infer("quickstart", quickstart_inputs(), model_version=asked)
                response = result.get_response()
                assert response.model_version == served_version
                outputs[asked] = {o.name for o in response.outputs}
                assert client.is_model_ready("quickstart", asked)
            assert outputs["1"] == {"prob", "z"}
            assert outputs["2"] == outputs[""] == {"prob", "z", "clipped"}
            v1 = client.infer("quickstart", quickstart_inputs(), model_version="1")
            v2 = client.infer("quickstart", quickstart_inputs(), model_version="2")
            np.testing.assert_array_equal(v1.as_numpy("prob"), v2.as_numpy("prob"))

            with pytest.raises(InferenceServerException) as raised:
                client.infer("quickstart", quickstart_inputs(), model_version="3")
            assert status_of(raised.value) == "NOT_FOUND"
            assert not client.is_model_ready("quickstart", "3")
            index = client.get_model_repository_index().models
            assert [(m.name, m.version, m.state) for m in index] == [
                ("quickstart", "1", "READY"),
                ("quickstart", "2", "READY"),
            ]
        finally:
            client.close()


def test_a_version_folder_disagreeing_with_its_graph_yaml_is_reported(versioned: Path) -> None:
    with ServerThread(versioned) as running:
        client = triton.InferenceServerClient(running.url)
        try:
            folder = shutil.copytree(versioned / "quickstart" / "2", versioned / "quickstart" / "3")
            yaml = folder / "graph.yaml"
            yaml.write_text(yaml.read_text().replace("version: 2", "version: 4"))
            with pytest.raises(InferenceServerException) as raised:
                client.load_model("quickstart")
            assert status_of(raised.value) == "FAILED_PRECONDITION"
            message = raised.value.message()
            assert LOCATION.search(message) and "'3'" in message and "4" in message, message

            assert client.get_model_metadata("quickstart").versions == ["1", "2"]
            for version in ("3", "4"):
                with pytest.raises(InferenceServerException) as missing:
                    client.infer("quickstart", quickstart_inputs(), model_version=version)
                assert status_of(missing.value) == "NOT_FOUND"
            assert client.infer("quickstart", quickstart_inputs()).get_response().model_version == "2"
            assert "'3'" in summary(running.url, "quickstart").last_error

            yaml.write_text(yaml.read_text().replace("version: 4", "version: 3"))
            client.load_model("quickstart")
            assert client.get_model_metadata("quickstart").versions == ["1", "2", "3"]
            assert client.infer("quickstart", quickstart_inputs()).get_response().model_version == "3"
        finally:
            client.close()


# --- unload and load ----------------------------------------------------------------------------


def test_unload_then_load(served: ServerThread, client: triton.InferenceServerClient) -> None:
    before = client.infer("fraud", fraud_inputs()).as_numpy("score")
    client.unload_model("fraud")
    assert not client.is_model_ready("fraud")
    assert graph_health(served.url, "fraud", "NOT_SERVING") == "NOT_SERVING"
    with pytest.raises(InferenceServerException) as raised:
        client.infer("fraud", fraud_inputs())
    assert status_of(raised.value) == "UNAVAILABLE"
    assert "unloaded" in raised.value.message()
    states = {(m.name, m.state) for m in client.get_model_repository_index().models}
    assert ("fraud", "UNAVAILABLE") in states

    client.load_model("fraud")
    assert client.is_model_ready("fraud")
    assert graph_health(served.url, "fraud", "SERVING") == "SERVING"
    np.testing.assert_array_equal(client.infer("fraud", fraud_inputs()).as_numpy("score"), before)


def test_loading_an_unknown_graph_is_not_found(client: triton.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as raised:
        client.load_model("nosuch")
    assert status_of(raised.value) == "NOT_FOUND"


# --- new folders --------------------------------------------------------------------------------


def test_a_new_graph_folder_is_picked_up_by_reload_graphs(
    repo: Path, example_graphs: Path, served: ServerThread, client: triton.InferenceServerClient
) -> None:
    with pytest.raises(InferenceServerException) as raised:
        client.infer("iris", quickstart_inputs())
    assert status_of(raised.value) == "NOT_FOUND"

    folder = copy_graph(example_graphs, "quickstart", repo / "iris")
    yaml = folder / "graph.yaml"
    yaml.write_text(yaml.read_text().replace("graph: quickstart", "graph: iris"))

    admin = EngineClient(served.url)
    try:
        response = admin.admin("ReloadGraphs", epb.ReloadGraphsRequest(), epb.ReloadGraphsResponse)
        listed = admin.admin("ListGraphs", epb.ListGraphsRequest(), epb.ListGraphsResponse)
    finally:
        admin.close()
    actions = {(r.name, r.version, r.action) for r in response.results}
    assert actions == {("fraud", "1", "unchanged"), ("iris", "1", "loaded")}
    assert [(g.name, g.state) for g in listed.graphs] == [("fraud", "READY"), ("iris", "READY")]

    assert client.is_model_ready("iris")
    result = client.infer("iris", quickstart_inputs())
    assert result.as_numpy("prob").shape == (2, 1)
    assert result.get_response().model_name == "iris"
