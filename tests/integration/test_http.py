"""The V2 HTTP/REST door on a real server: tritonclient.http as users call it, httpx for every
path and every error code, the OpenAPI document, and the same answers as the gRPC door."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp

from engine.rest.routes import ROUTES
from tests.integration.slow_model import ROWS, WIDTH, slow_graph
from tests.server_thread import ServerThread

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def graphs(tmp_path_factory: pytest.TempPathFactory, example_graphs: Path) -> Path:
    root = tmp_path_factory.mktemp("graphs")
    for name in ("quickstart", "fraud", "eta"):
        shutil.copytree(example_graphs / name, root / name)
    shutil.copy(example_graphs / "engine.yaml", root / "engine.yaml")
    slow_graph(root / "slow")
    return root


@pytest.fixture(scope="module")
def server(graphs: Path) -> Iterator[ServerThread]:
    with ServerThread(graphs) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: ServerThread) -> Iterator[thttp.InferenceServerClient]:
    c = thttp.InferenceServerClient(server.http_url)
    yield c
    c.close()


@pytest.fixture(scope="module")
def http(server: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://{server.http_url}", timeout=30) as c:
        yield c


def _x(rows: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(rows, 4)).astype(np.float32)


def _infer_http(client: thttp.InferenceServerClient, x: np.ndarray, binary: bool) -> thttp.InferResult:
    tensor = thttp.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=binary)
    outputs = [thttp.InferRequestedOutput(n, binary_data=binary) for n in ("prob", "z")]
    return client.infer("quickstart", [tensor], outputs=outputs, request_id="req-1")


# -- tritonclient.http ---------------------------------------------------------------------------
def test_health_and_metadata(client: thttp.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("quickstart") and client.is_model_ready("quickstart", "1")
    assert not client.is_model_ready("absent")
    meta = client.get_server_metadata()
    assert meta["name"] == "graph-engine" and "binary_tensor_data" in meta["extensions"]
    model = client.get_model_metadata("quickstart")
    assert model["versions"] == ["1"]
    assert model["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    assert [o["name"] for o in model["outputs"]] == ["prob", "z"]


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_infer_answers_what_grpc_answers(
    client: thttp.InferenceServerClient, server: ServerThread, binary: bool
) -> None:
    x = _x()
    result = _infer_http(client, x, binary)
    response = result.get_response()
    assert response["id"] == "req-1" and response["model_version"] == "1"
    shaped = {o["name"]: ("parameters" in o) for o in response["outputs"]}
    assert shaped == {"prob": binary, "z": binary}
    grpc_client = tgrpc.InferenceServerClient(server.url)
    tensor = tgrpc.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    expected = grpc_client.infer("quickstart", [tensor])
    grpc_client.close()
    for name in ("prob", "z"):
        np.testing.assert_array_equal(result.as_numpy(name), expected.as_numpy(name))


def test_bytes_inputs_travel_as_json_strings_and_as_binary(client: thttp.InferenceServerClient) -> None:
    answers = []
    for binary in (False, True):
        amount = thttp.InferInput("amount", [2, 1], "FP32")
        amount.set_data_from_numpy(np.float32([[12.5], [900.0]]), binary_data=binary)
        user = thttp.InferInput("user_id", [2, 1], "BYTES")
        user.set_data_from_numpy(np.array([[b"u1"], [b"nobody"]], dtype=object), binary_data=binary)
        ip = thttp.InferInput("txn", [2, 3], "FP32")
        ip.set_data_from_numpy(np.float32([[0.1, 0, 12], [0.9, 1, 3]]), binary_data=binary)
        outputs = [thttp.InferRequestedOutput(n, binary_data=binary) for n in ("score", "decision")]
        result = client.infer("fraud", [amount, user, ip], outputs=outputs)
        answers.append((result.as_numpy("score"), result.as_numpy("decision")))
    np.testing.assert_array_equal(answers[0][0], answers[1][0])
    assert answers[0][1].tolist() == answers[1][1].tolist()
    assert answers[1][1].dtype == np.bool_ and answers[1][1].shape == (2, 1)  # BOOL, 1 byte each


def test_config_stats_and_repository(client: thttp.InferenceServerClient, server: ServerThread) -> None:
    config = client.get_model_config("quickstart")
    assert config["platform"] == "ensemble" and config["input"][0]["dims"] == [4]
    assert client.get_model_config("quickstart.embed")["name"] == "quickstart.embed"
    before = client.get_inference_statistics("quickstart")["model_stats"][0]
    _infer_http(client, _x(), True)
    after = client.get_inference_statistics("quickstart")["model_stats"][0]
    assert after["inference_count"] == before.get("inference_count", 0) + 3  # rows
    assert after["inference_stats"]["success"]["count"] == before["inference_stats"]["success"]["count"] + 1
    every = {s["name"] for s in client.get_inference_statistics()["model_stats"]}
    assert {"quickstart", "quickstart.embed", "fraud"} <= every
    index = {row["name"]: row["state"] for row in client.get_model_repository_index()}
    assert index["quickstart"] == "READY"
    client.unload_model("slow")
    assert not client.is_model_ready("slow")
    assert {r["name"]: r["state"] for r in client.get_model_repository_index()}["slow"] == "UNAVAILABLE"
    client.load_model("slow")
    assert client.is_model_ready("slow")


# -- every path and error code through httpx -------------------------------------------------------
def test_error_bodies_name_what_is_wrong(http: httpx.Client) -> None:
    good = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [0, 1, 2, 3]}]}

    def x(datatype: str, shape: list[int], data: list[int]) -> dict[str, object]:
        return {"inputs": [{"name": "x", "datatype": datatype, "shape": shape, "data": data}]}

    cases: list[tuple[str, str, dict[str, object] | bytes, int, str]] = [
        ("POST", "/v2/models/quickstart/infer", b"{not json", 400, "not valid JSON"),
        ("POST", "/v2/models/quickstart/infer", x("FP32", [1, 3], [1, 2, 3]), 400, "tensor 'x'"),
        ("POST", "/v2/models/quickstart/infer", x("INT32", [1, 4], [1, 2, 3, 4]), 400, "datatype"),
        ("POST", "/v2/models/quickstart/infer", x("FP32", [1, 4], [1, 2]), 400, "needs 4"),
        ("POST", "/v2/models/quickstart/infer", {"inputs": []}, 400, "missing"),
        ("POST", "/v2/models/quickstart/infer", {**good, "outputs": [{"name": "nope"}]}, 400, "'nope'"),
        ("POST", "/v2/models/quickstart/infer",
         {**good, "outputs": [{"name": "prob", "parameters": {"classification": 2}}]}, 501, "classification"),
        ("POST", "/v2/models/quickstart/infer", {**good, "parameters": {"timeout": "soon"}}, 400, "timeout"),
        ("POST", "/v2/models/quickstart/infer", {**good, "parameters": {"sequence_id": 7}}, 400, "sequence"),
        ("POST", "/v2/models/quickstart/infer", {**good, "parameters": {"priority": 2}}, 400, "priorities"),
        ("POST", "/v2/models/quickstart/infer", {**good, "parameters": {"colour": "red"}}, 400, "'colour'"),
        ("POST", "/v2/models/absent/infer", good, 404, "'absent'"),
        ("POST", "/v2/models/quickstart/versions/9/infer", good, 404, "version"),
        ("GET", "/v2/models/absent", {}, 404, "'absent'"),
        ("GET", "/v2/models/absent/config", {}, 404, "'absent'"),
        ("GET", "/v2/models/absent/stats", {}, 404, "'absent'"),
        ("GET", "/v2/nowhere", {}, 404, "no such path"),
        ("POST", "/v2/repository/models/absent/load", {}, 404, "'absent'"),
        ("POST", "/v2/repository/models/absent/unload", {}, 404, "'absent'"),
        ("GET", "/v2/engine/graphs/absent", {}, 404, "'absent'"),
        ("POST", "/v2/engine/reload", {"names": "quickstart"}, 400, "'names'"),
        ("POST", "/v2/engine/validate", {"yaml": "inputs: {}", "graph_dir": "../../etc"}, 403, "graph_dir"),
        ("DELETE", "/v2/models/quickstart", {}, 405, "DELETE"),
    ]  # fmt: skip
    for method, path, body, code, needle in cases:
        content = body if isinstance(body, bytes) else json.dumps(body).encode() if body else b""
        response = http.request(method, path, content=content)
        assert response.status_code == code, (path, body, response.text)
        error = response.json()["error"]
        assert needle in error, (path, error)
        assert "Traceback" not in error and str(ROOT) not in error


def test_a_timeout_that_passes_is_504(http: httpx.Client) -> None:
    data = np.ones((ROWS, WIDTH), np.float32).tobytes()  # binary: no big JSON to parse on the event loop
    header = json.dumps(
        {
            "parameters": {"timeout": 1000},  # 1 ms for a call that runs far longer
            "inputs": [
                {
                    "name": "x",
                    "datatype": "FP32",
                    "shape": [ROWS, WIDTH],
                    "parameters": {"binary_data_size": len(data)},
                }
            ],
        }
    ).encode()
    response = http.post(
        "/v2/models/slow/infer",
        content=header + data,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert response.status_code == 504, response.text
    assert "deadline" in response.json()["error"]


def test_binary_framing_errors_are_400(http: httpx.Client) -> None:
    header = json.dumps(
        {
            "inputs": [
                {"name": "x", "datatype": "FP32", "shape": [1, 4], "parameters": {"binary_data_size": 16}}
            ]
        }
    ).encode()
    data = np.arange(4, dtype=np.float32).tobytes()
    ok = http.post(
        "/v2/models/quickstart/infer",
        content=header + data,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert ok.status_code == 200 and ok.headers["content-type"].startswith("application/json")
    for blob, length, needle in (
        (data[:8], len(header), "runs past the end"),
        (data + b"xx", len(header), "bytes of binary data after"),
        (data, len(header) + 100, "outside the body"),
        (data, "twelve", "not a number"),
    ):
        bad = http.post(
            "/v2/models/quickstart/infer",
            content=header + blob,
            headers={"Inference-Header-Content-Length": str(length)},
        )
        assert bad.status_code == 400 and needle in bad.json()["error"], bad.text


def test_binary_outputs_follow_the_json_header(http: httpx.Client) -> None:
    body = {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 4], "data": [[0, 1, 2, 3], [3, 2, 1, 0]]}],
        "parameters": {"binary_data_output": True},
    }
    response = http.post("/v2/models/quickstart/infer", json=body)
    assert response.status_code == 200 and response.headers["content-type"] == "application/octet-stream"
    length = int(response.headers["Inference-Header-Content-Length"])
    header = json.loads(response.content[:length])
    sizes = [o["parameters"]["binary_data_size"] for o in header["outputs"]]
    assert sizes == [2 * 1 * 4, 2 * 2 * 4]  # prob [2,1], z [2,2] of FP32
    assert len(response.content) == length + sum(sizes)


def test_health_paths_and_admin_paths(http: httpx.Client) -> None:
    live = http.get("/v2/health/live")
    assert live.json() == {"live": True} and live.headers["server"] == "graph-engine"  # no versions
    assert http.get("/v2/health/ready").json() == {"ready": True}
    assert http.get("/v2/models/quickstart/ready").status_code == 200
    assert http.get("/v2/models/absent/ready").status_code == 400
    names = [g["name"] for g in http.get("/v2/engine/graphs").json()["graphs"]]
    assert names == sorted(names) and "quickstart" in names
    described = http.get("/v2/engine/graphs/quickstart").json()
    assert [n["name"] for n in described["nodes"]] == ["embed", "clipped", "classify"]
    assert "flowchart" in described["mermaid"] or "graph" in described["mermaid"]
    assert http.get("/v2/engine/graphs/quickstart/versions/1").json()["version"] == "1"
    explained = http.post(
        "/v2/engine/graphs/quickstart/explain",
        json={"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [0, 1, 2, 3]}]},
    ).json()
    assert [n["name"] for n in explained["nodes"]] == ["embed", "clipped", "classify"]
    assert explained["response"]["outputs"][0]["name"] == "prob"
    assert "inputs" not in explained["nodes"][0]
    with_tensors = http.post(
        "/v2/engine/graphs/quickstart/explain",
        params={"include_tensors": "true"},
        json={"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [0, 1, 2, 3]}]},
    ).json()
    embed = with_tensors["nodes"][0]
    assert embed["inputs"][0]["data"] == [0.0, 1.0, 2.0, 3.0] and embed["outputs"][0]["shape"] == [1, 2]
    binary = http.post(
        "/v2/engine/graphs/quickstart/explain",
        json={
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [0, 1, 2, 3]}],
            "parameters": {"binary_data_output": True},
        },
    )
    assert binary.status_code == 400 and "JSON only" in binary.json()["error"]
    reloaded = http.post("/v2/engine/reload", json={"names": ["quickstart"]}).json()["results"]
    assert reloaded == [{"name": "quickstart", "version": "1", "action": "unchanged", "error": ""}]
    invalid = http.post("/v2/engine/validate", json={"yaml": "inputs: [", "filename": "graph.yaml"}).json()
    assert invalid["valid"] is False and invalid["diagnostics"][0]["line"] >= 1
    assert (
        "graphs" in http.get("/v2/engine/shadows").json() or http.get("/v2/engine/shadows").status_code == 200
    )
    assert (
        http.get("/v2/engine/shadows", params={"format": "table"})
        .headers["content-type"]
        .startswith("text/plain")
    )


def test_openapi_is_served_and_matches_docs(http: httpx.Client) -> None:
    served = http.get("/v2/openapi.json")
    assert served.status_code == 200
    assert served.text == (ROOT / "docs" / "openapi.json").read_text(), (
        "run: python -m engine.rest > docs/openapi.json"
    )
    paths = served.json()["paths"]
    for route in ROUTES:
        assert route.method.lower() in paths[route.path], route.path
    checked = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "docs/openapi.json"], capture_output=True, text=True
    )
    assert checked.stdout.strip() == "docs/openapi.json"


def test_every_route_answers_200(http: httpx.Client) -> None:
    """Each path of the route table (and so of the OpenAPI document), called with real values."""
    bodies: dict[str, dict[str, object]] = {
        "InferRequest": {
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [0, 1, 2, 3]}]
        },
        "ReloadRequest": {"names": ["quickstart"]},
        "ValidateRequest": {
            "yaml": (ROOT / "graphs" / "quickstart" / "graph.yaml").read_text(),
            "graph_dir": "quickstart",
        },
        "IndexRequest": {"ready": True},
        "LoadRequest": {},
        "FeedbackRequest": {"graph": "fraud", "labels": [{"request_id": "not-served", "value": 1}]},
    }
    unload_last = sorted(ROUTES, key=lambda route: route.path.endswith("/unload"))
    for route in unload_last:
        path = route.path.replace("{model}", "quickstart").replace("{version}", "1")
        answer = http.request(route.method, path, json=bodies.get(route.body))
        assert answer.status_code == 200, (route.method, route.path, answer.text)
    assert http.post("/v2/repository/models/quickstart/load").status_code == 200  # the unload undone
    assert http.get("/v2/models/quickstart/ready").status_code == 200


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compressed_request_bodies_are_accepted(client: thttp.InferenceServerClient, algorithm: str) -> None:
    x = _x()
    tensor = thttp.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=True)
    plain = client.infer("quickstart", [tensor]).as_numpy("prob")
    packed = client.infer(
        "quickstart",
        [tensor],
        request_compression_algorithm=algorithm,
        response_compression_algorithm=algorithm,
    )
    np.testing.assert_array_equal(packed.as_numpy("prob"), plain)
