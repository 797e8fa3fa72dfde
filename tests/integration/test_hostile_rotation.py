"""Rotated credentials on a live server: a replaced certificate and key, and a replaced token file,
are served from the next connection / call on, without a restart and without dropping the
connections already open."""

from __future__ import annotations

import shutil
import ssl
import subprocess
import time
from pathlib import Path

import pytest
import tritonclient.grpc as triton

from tests.integration.test_security import _x, graphs  # noqa: F401 - the fixture
from tests.server_thread import ServerThread

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


def _certificate(folder: Path, name: str) -> None:
    """A self-signed certificate for 127.0.0.1 as NAME.pem / NAME.key."""
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
         "-keyout", f"{name}.key", "-out", f"{name}.pem", "-addext", "subjectAltName=IP:127.0.0.1"],
        cwd=folder, check=True, capture_output=True,
    )  # fmt: skip


def _served_certificate(port: int) -> str:
    pem = ssl.get_server_certificate(("127.0.0.1", port))
    return ssl.DER_cert_to_PEM_cert(ssl.PEM_cert_to_DER_cert(pem))


def _eventually(check, what: str, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_a_replaced_certificate_is_served_to_new_connections_and_open_ones_keep_working(
    graphs: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    for name in ("old", "new"):
        _certificate(tmp_path, name)
    live = tmp_path / "live"
    live.mkdir()
    shutil.copy(tmp_path / "old.pem", live / "tls.crt")
    shutil.copy(tmp_path / "old.key", live / "tls.key")
    with ServerThread(graphs, tls_cert=str(live / "tls.crt"), tls_key=str(live / "tls.key")) as server:
        port = server.port
        old = (tmp_path / "old.pem").read_text()
        assert _served_certificate(port).strip() == old.strip()
        trusting_old = str(tmp_path / "old.pem")
        kept = triton.InferenceServerClient(server.url, ssl=True, root_certificates=trusting_old)
        assert _x(kept).shape == (1, 1)  # a connection opened on the old certificate
        shutil.copy(tmp_path / "new.key", live / "tls.key.tmp")
        shutil.copy(tmp_path / "new.pem", live / "tls.crt.tmp")
        (live / "tls.key.tmp").replace(live / "tls.key")
        (live / "tls.crt.tmp").replace(live / "tls.crt")
        new = (tmp_path / "new.pem").read_text()
        _eventually(lambda: _served_certificate(port).strip() == new.strip(), "the new certificate")
        fresh = triton.InferenceServerClient(
            server.url, ssl=True, root_certificates=str(tmp_path / "new.pem")
        )
        assert _x(fresh).shape == (1, 1)
        assert _x(kept).shape == (1, 1)  # not dropped
        fresh.close()
        kept.close()


def test_a_replaced_token_file_is_used_without_a_restart(graphs: Path, tmp_path: Path) -> None:  # noqa: F811
    tokens = tmp_path / "infer.tokens"
    tokens.write_text("first-secret\n")
    with ServerThread(graphs, auth_token_file=str(tokens)) as server:
        client = triton.InferenceServerClient(server.url)
        assert _x(client, headers={"authorization": "Bearer first-secret"}).shape == (1, 1)
        tokens.write_text("second-secret\n")

        def rotated() -> bool:
            try:
                _x(client, headers={"authorization": "Bearer second-secret"})
            except triton.InferenceServerException:
                return False
            return True

        _eventually(rotated, "the new token")
        with pytest.raises(triton.InferenceServerException) as old:
            _x(client, headers={"authorization": "Bearer first-secret"})
        assert old.value.status() == "StatusCode.UNAUTHENTICATED"
        client.close()
