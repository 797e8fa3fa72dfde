"""engine.v1.Engine: list, describe, validate and explain over a real server."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from engine.protocol.client import EngineClient, RemoteError, decode_outputs
from engine.protocol.generated.engine.v1 import engine_pb2 as epb
from engine.protocol.generated.inference import grpc_service_pb2 as pb
from tests.server_thread import ServerThread

TXN = [[0.5, 0, 3]]  # ip_risk_score, foreign_card, hour


@pytest.fixture(scope="module")
def engine(server: ServerThread):  # type: ignore[no-untyped-def]
    client = EngineClient(server.url)
    yield client
    client.close()


def test_list_graphs(engine: EngineClient) -> None:
    response = engine.admin("ListGraphs", epb.ListGraphsRequest(), epb.ListGraphsResponse)
    by_name = {g.name: g for g in response.graphs}
    assert by_name["fraud"].state == "READY" and list(by_name["fraud"].versions) == ["1"]
    assert by_name["quickstart"].last_error == ""


def test_describe_graph_shows_nodes_edges_and_model_hashes(
    engine: EngineClient, example_graphs: Path
) -> None:
    d = engine.admin("DescribeGraph", epb.DescribeGraphRequest(name="fraud"), epb.DescribeGraphResponse)
    assert d.name == "fraud" and d.version == "1" and d.state == "READY"
    nodes = {n.name: n for n in d.nodes}
    assert nodes["ip_risk"].kind == "model" and nodes["ip_risk"].model_path == "ip_risk.onnx"
    expected = hashlib.sha256((example_graphs / "fraud" / "ip_risk.onnx").read_bytes()).hexdigest()
    assert nodes["ip_risk"].model_sha256 == expected
    assert list(nodes["risk_route"].branches) == ["deep", "light"]
    assert ("x", "ip_risk") in {(e.source, e.target) for e in d.edges}
    assert ("risk_route", "deep") in {(e.source, e.target) for e in d.edges}
    assert nodes["user"].kind == "features" and ("user", "x") in {(e.source, e.target) for e in d.edges}
    assert "ip_risk" in d.mermaid and [i.name for i in d.inputs] == ["amount", "user_id", "txn"]


def test_describe_unknown_graph_is_not_found(engine: EngineClient) -> None:
    with pytest.raises(RemoteError) as info:
        engine.admin("DescribeGraph", epb.DescribeGraphRequest(name="nope"), epb.DescribeGraphResponse)
    assert info.value.code == "NOT_FOUND"


def test_validate_graph_reports_every_problem_with_positions(
    engine: EngineClient, example_graphs: Path
) -> None:
    good = (example_graphs / "fraud" / "graph.yaml").read_text()
    ok = engine.admin(
        "ValidateGraph",
        epb.ValidateGraphRequest(yaml=good, filename="fraud/graph.yaml"),
        epb.ValidateGraphResponse,
    )
    assert ok.ok and not [d for d in ok.diagnostics if d.severity == "error"]
    bad = good.replace(
        "inputs: [ip_risk.prob, risk_route.prob]", "inputs: [ip_risk.probability, risk_rout.prob]"
    )
    bad = bad.replace("value: 0.5", "valu: 0.5")
    response = engine.admin(
        "ValidateGraph",
        epb.ValidateGraphRequest(yaml=bad, filename="fraud/graph.yaml"),
        epb.ValidateGraphResponse,
    )
    assert not response.ok
    messages = [(d.line, d.message) for d in response.diagnostics if d.severity == "error"]
    assert len(messages) >= 3, messages
    assert all(line > 0 for line, _ in messages)
    text = " ".join(m for _, m in messages)
    assert "probability" in text and "risk_rout" in text and "valu" in text


def test_validate_graph_cannot_reach_outside_the_repository(engine: EngineClient) -> None:
    with pytest.raises(RemoteError) as info:
        engine.admin(
            "ValidateGraph",
            epb.ValidateGraphRequest(yaml="graph: x", graph_dir="../../etc"),
            epb.ValidateGraphResponse,
        )
    assert info.value.code == "PERMISSION_DENIED"


def test_explain_shows_each_node_its_timing_and_the_branch_taken(engine: EngineClient) -> None:
    request = engine.build_request(
        "fraud",
        {"amount": [[50.0], [5000.0], [20.0]], "user_id": [["u0001"], ["u0108"], ["nobody"]], "txn": TXN * 3},
    )
    explained = engine.explain(request)
    assert explained.graph == "fraud" and explained.total_ns > 0
    nodes = {n.name: n for n in explained.nodes}
    assert {"log_amount", "user", "x", "ip_risk", "risk_route", "deep", "light", "score", "decision"} <= set(
        nodes
    )
    assert dict(nodes["risk_route"].branch_rows) == {"deep": 1, "light": 2}
    assert nodes["deep"].rows == 1 and nodes["light"].rows == 2
    assert all(n.duration_ns > 0 for n in explained.nodes)
    score = decode_outputs(pb.ModelInferResponse(outputs=list(nodes["score"].outputs)))["output"]
    final = decode_outputs(explained.response)
    np.testing.assert_allclose(score, final["score"])
    plain = engine.infer(request)
    np.testing.assert_allclose(plain["score"], final["score"])


def test_explain_skips_branches_with_no_rows(engine: EngineClient) -> None:
    request = engine.build_request("fraud", {"amount": [[10.0]], "user_id": [["u0001"]], "txn": TXN})
    names = [n.name for n in engine.explain(request, include_tensors=False).nodes]
    assert "light" in names and "deep" not in names
