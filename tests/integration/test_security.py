"""Bearer tokens and TLS on a real server, with certificates made by openssl for the test."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from grpc_health.v1 import health_pb2, health_pb2_grpc

from engine.protocol.client import EngineClient, RemoteError
from engine.protocol.generated.engine.v1 import engine_pb2 as epb
from tests.server_thread import ServerThread

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


def _x(client: triton.InferenceServerClient, **kwargs) -> np.ndarray:  # type: ignore[no-untyped-def]
    tensor = triton.InferInput("x", [1, 4], "FP32")
    tensor.set_data_from_numpy(np.zeros((1, 4), np.float32))
    return client.infer("quickstart", [tensor], **kwargs).as_numpy("prob")


@pytest.fixture(scope="module")
def graphs(tmp_path_factory: pytest.TempPathFactory, example_graphs: Path) -> Path:
    root = tmp_path_factory.mktemp("graphs")
    shutil.copytree(example_graphs / "quickstart", root / "quickstart")
    return root


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("certs")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
        "-keyout", "ca.key", "-out", "ca.pem")  # fmt: skip
    (d / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name in ("server", "client"):
        run("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", f"{name}.key",
            "-out", f"{name}.csr")  # fmt: skip
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "2", "-extfile", "san.cnf", "-out", f"{name}.pem")  # fmt: skip
    return d


def test_tokens_gate_inference_and_admin_but_not_health(graphs: Path, tmp_path: Path) -> None:
    (tmp_path / "infer.tokens").write_text("infer-secret\n")
    (tmp_path / "admin.tokens").write_text("admin-secret\nrotated-admin-secret\n")
    settings = {
        "auth_token_file": str(tmp_path / "infer.tokens"),
        "admin_token_file": str(tmp_path / "admin.tokens"),
    }
    with ServerThread(graphs, **settings) as server:
        client = triton.InferenceServerClient(server.url)
        with pytest.raises(triton.InferenceServerException) as missing:
            _x(client)
        assert missing.value.status() == "StatusCode.UNAUTHENTICATED"
        with pytest.raises(triton.InferenceServerException) as wrong:
            _x(client, headers={"authorization": "Bearer guess"})
        assert wrong.value.status() == "StatusCode.UNAUTHENTICATED" and "guess" not in wrong.value.message()
        assert _x(client, headers={"authorization": "Bearer infer-secret"}).shape == (1, 1)
        assert _x(client, headers={"authorization": "Bearer rotated-admin-secret"}).shape == (1, 1)
        # probes need nothing: grpc.health.v1 and V2 liveness/readiness
        assert client.is_server_live() and client.is_server_ready()
        with grpc.insecure_channel(server.url) as channel:
            status = (
                health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2).status
            )
        assert status == health_pb2.HealthCheckResponse.SERVING
        # admin RPCs need the admin token
        with pytest.raises(triton.InferenceServerException) as denied:
            client.load_model("quickstart", headers={"authorization": "Bearer infer-secret"})
        assert denied.value.status() == "StatusCode.PERMISSION_DENIED"
        client.load_model("quickstart", headers={"authorization": "Bearer admin-secret"})
        for token, code in ((None, "UNAUTHENTICATED"), ("infer-secret", "PERMISSION_DENIED")):
            admin = EngineClient(server.url, token=token)
            with pytest.raises(RemoteError) as info:
                admin.admin("ListGraphs", epb.ListGraphsRequest(), epb.ListGraphsResponse)
            assert info.value.code == code
            admin.close()
        admin = EngineClient(server.url, token="admin-secret")
        assert [
            g.name for g in admin.admin("ListGraphs", epb.ListGraphsRequest(), epb.ListGraphsResponse).graphs
        ]
        admin.close()
        client.close()


def test_tls_serves_trusting_clients_and_refuses_plaintext(graphs: Path, certs: Path) -> None:
    tls = {"tls_cert": str(certs / "server.pem"), "tls_key": str(certs / "server.key")}
    with ServerThread(graphs, **tls) as server:
        secure = triton.InferenceServerClient(server.url, ssl=True, root_certificates=str(certs / "ca.pem"))
        assert _x(secure).shape == (1, 1)
        secure.close()
        plain = triton.InferenceServerClient(server.url)
        with pytest.raises(triton.InferenceServerException) as refused:
            _x(plain, client_timeout=5)
        assert refused.value.status() in ("StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED")
        plain.close()
        cli = EngineClient(server.url, ca_file=str(certs / "ca.pem"))
        assert "quickstart" in [g.name for g in cli.admin("ListGraphs", epb.ListGraphsRequest(),
                                                           epb.ListGraphsResponse).graphs]  # fmt: skip
        cli.close()


def test_mutual_tls_requires_a_client_certificate(graphs: Path, certs: Path) -> None:
    tls = {"tls_cert": str(certs / "server.pem"), "tls_key": str(certs / "server.key"),
           "tls_client_ca": str(certs / "ca.pem")}  # fmt: skip
    with ServerThread(graphs, **tls) as server:
        anonymous = triton.InferenceServerClient(
            server.url, ssl=True, root_certificates=str(certs / "ca.pem")
        )
        with pytest.raises(triton.InferenceServerException):
            _x(anonymous, client_timeout=5)
        anonymous.close()
        known = triton.InferenceServerClient(
            server.url, ssl=True, root_certificates=str(certs / "ca.pem"),
            private_key=str(certs / "client.key"), certificate_chain=str(certs / "client.pem"),
        )  # fmt: skip
        assert _x(known).shape == (1, 1)
        known.close()
