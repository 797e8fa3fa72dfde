"""Model sources: registry references, the content-addressed cache, pinned https URLs.

The URL tests fetch from a real TLS server on a loopback port (a self-signed certificate made
with openssl, trusted through SSL_CERT_FILE as an operator would), and load the graph with real
onnxruntime. The MLflow side runs against a real tracking server in
tests/integration/test_model_registry.py.
"""

from __future__ import annotations

import hashlib
import http.server
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.errors import GraphInvalid
from engine.graph import load_graph
from engine.registry import ModelCache, ModelSources, RegistryReference, parse_registry_reference
from engine.runtimes.onnx import OnnxRuntimeFactory

QUICKSTART = Path(__file__).resolve().parents[2] / "graphs" / "quickstart"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("models:/fraud/3", RegistryReference("fraud", version="3")),
        ("models:/fraud/03", RegistryReference("fraud", version="3")),
        ("models:/fraud@champion", RegistryReference("fraud", alias="champion")),
        ("models:/fraud-deep.v2@canary", RegistryReference("fraud-deep.v2", alias="canary")),
    ],
)
def test_registry_references_parse(text: str, expected: RegistryReference) -> None:
    assert parse_registry_reference(text) == expected


@pytest.mark.parametrize(
    "text",
    ["models:/fraud", "models:/fraud/latest", "models:/fraud/0", "models:/@a", "models:/a@", "models:/a/b/1"],
)
def test_malformed_registry_references_say_what_is_expected(text: str) -> None:
    with pytest.raises(ValueError, match="models:/NAME/VERSION"):
        parse_registry_reference(text)


def test_the_cache_keeps_only_bytes_with_the_expected_digest(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path)
    data = b"model bytes"
    good = hashlib.sha256(data).hexdigest()
    with pytest.raises(ValueError, match="not the pinned"):
        cache.store([data], expect="0" * 64)
    assert not list((tmp_path / "sha256").iterdir())  # nothing half-written is left behind
    digest, path = cache.store([data[:5], data[5:]], expect=good)
    assert (digest, path.read_bytes()) == (good, data)
    assert cache.has(good) == path
    path.write_bytes(b"damaged")  # a file that no longer has its digest is dropped, to be fetched again
    assert cache.has(good) is None
    assert not path.exists()


class _Files(http.server.SimpleHTTPRequestHandler):
    requests: list[str] = []

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        type(self).requests.append(self.path)
        super().do_GET()


@pytest.fixture(scope="module")
def https_files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, Path]]:
    """(base URL, served folder, CA file) of a real TLS file server on a loopback port."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make the test certificate")
    root = tmp_path_factory.mktemp("https")
    served = root / "files"
    served.mkdir()
    cert, key = root / "cert.pem", root / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    handler = lambda *a: _Files(*a, directory=str(served))  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_address[1]}", served, cert
    server.shutdown()
    server.server_close()


@pytest.fixture
def sources(
    https_files: tuple[str, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ModelSources]:
    monkeypatch.setenv("SSL_CERT_FILE", str(https_files[2]))
    made = ModelSources.from_config({}, tmp_path / "cache")
    yield made
    made.close()


def _publish(https_files: tuple[str, Path, Path], name: str) -> tuple[str, str]:
    base, folder, _ = https_files
    shutil.copy(QUICKSTART / name, folder / name)
    return f"{base}/{name}", hashlib.sha256((QUICKSTART / name).read_bytes()).hexdigest()


def test_a_pinned_url_is_fetched_once_and_verified(
    sources: ModelSources, https_files: tuple[str, Path, Path]
) -> None:
    url, digest = _publish(https_files, "scaler.onnx")
    _Files.requests.clear()
    first = sources.fetch(url, digest)
    assert (first.sha256, first.resolved, first.path.read_bytes()) == (
        digest,
        url,
        (QUICKSTART / "scaler.onnx").read_bytes(),
    )
    again = sources.fetch(url, digest.upper())
    assert again.path == first.path
    assert _Files.requests == ["/scaler.onnx"]  # the second fetch came from the cache


def test_a_url_with_the_wrong_pin_is_refused_naming_it_without_credentials(
    sources: ModelSources, https_files: tuple[str, Path, Path]
) -> None:
    url, _ = _publish(https_files, "classifier.onnx")
    secret = url.replace("https://", "https://user:hunter2@") + "?token=hunter2"
    with pytest.raises(ValueError, match="not the pinned") as failure:
        sources.fetch(secret, "ab" * 32)
    assert url in str(failure.value)
    assert "hunter2" not in str(failure.value)


@pytest.mark.parametrize(
    ("url", "pin", "message"),
    [
        ("http://models.example/m.onnx", "ab" * 32, "must be https://"),
        ("https://models.example/m.onnx", None, "needs a 'sha256:' pin"),
    ],
)
def test_unsafe_urls_are_refused_before_any_fetch(
    sources: ModelSources, url: str, pin: str | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        sources.fetch(url, pin)


def test_a_registry_reference_without_a_registry_names_the_setting(sources: ModelSources) -> None:
    with pytest.raises(ValueError, match="no registry is configured"):
        sources.fetch("models:/fraud@champion")


GRAPH = """\
graph: pinned
inputs:
  x: {{datatype: FP32, shape: [-1, 4]}}
nodes:
  embed:
    model: {url}
    sha256: {pin}
    inputs: {{x: inputs.x}}
outputs:
  z: embed.z
"""


def test_a_graph_loads_a_pinned_url_model_like_a_local_file(
    sources: ModelSources, https_files: tuple[str, Path, Path], tmp_path: Path
) -> None:
    url, digest = _publish(https_files, "scaler.onnx")
    folder = tmp_path / "pinned"
    folder.mkdir()
    (folder / "graph.yaml").write_text(GRAPH.format(url=url, pin=digest))
    runtimes = OnnxRuntimeFactory(max_workers=1)
    try:
        graph = load_graph(folder / "graph.yaml", runtimes, models=sources)
        assert graph.artifacts[url].sha256 == digest
        assert graph.plan.nodes[0].model_sha256 == digest
        graph.close()
        (folder / "graph.yaml").write_text(GRAPH.format(url=url, pin="cd" * 32))
        with pytest.raises(GraphInvalid) as failure:
            load_graph(folder / "graph.yaml", runtimes, models=sources)
        (problem,) = failure.value.diagnostics
        assert problem.line == 6  # at the model: value
        assert f"cannot fetch model '{url}'" in problem.message
        assert "not the pinned" in problem.message
    finally:
        runtimes.close()


LOCAL = """\
graph: local_pin
inputs:
  x: {{datatype: FP32, shape: [-1, 4]}}
nodes:
  embed:
    model: scaler.onnx
    sha256: {pin}
    inputs: {{x: inputs.x}}
outputs:
  z: embed.z
"""


def test_a_pinned_local_file_must_have_its_pin(tmp_path: Path) -> None:
    folder = tmp_path / "local_pin"
    folder.mkdir()
    shutil.copy(QUICKSTART / "scaler.onnx", folder / "scaler.onnx")
    digest = hashlib.sha256((folder / "scaler.onnx").read_bytes()).hexdigest()
    runtimes = OnnxRuntimeFactory(max_workers=1)
    try:
        (folder / "graph.yaml").write_text(LOCAL.format(pin=f"sha256:{digest.upper()}"))
        load_graph(folder / "graph.yaml", runtimes).close()
        (folder / "graph.yaml").write_text(LOCAL.format(pin="ab" * 32))
        with pytest.raises(GraphInvalid) as failure:
            load_graph(folder / "graph.yaml", runtimes)
        (problem,) = failure.value.diagnostics
        assert problem.message == f"model 'scaler.onnx' has sha256 {digest}, not the pinned {'ab' * 32}"
        (folder / "graph.yaml").write_text(LOCAL.format(pin="not-a-digest"))
        with pytest.raises(GraphInvalid, match="64 hexadecimal digits"):
            load_graph(folder / "graph.yaml", runtimes)
    finally:
        runtimes.close()


def test_a_reference_without_a_model_source_is_reported_at_its_node(tmp_path: Path) -> None:
    folder = tmp_path / "local_pin"
    folder.mkdir()
    (folder / "graph.yaml").write_text(
        LOCAL.replace("    sha256: {pin}\n", "").format().replace("scaler.onnx", "models:/fraud@champion")
    )
    runtimes = OnnxRuntimeFactory(max_workers=1)
    try:
        with pytest.raises(GraphInvalid) as failure:
            load_graph(folder / "graph.yaml", runtimes)
        (problem,) = failure.value.diagnostics
        assert problem.line == 6
        assert "models:/fraud@champion" in problem.message and "no model source" in problem.message
    finally:
        runtimes.close()


def test_a_reload_reads_the_references_and_pins_without_compiling(tmp_path: Path) -> None:
    from engine.graph import model_references

    path = tmp_path / "graph.yaml"
    path.write_text(
        "nodes:\n"
        "  a: {model: a.onnx, inputs: x}\n"
        "  b: {model: 'models:/fraud@champion', inputs: x}\n"
        f"  c: {{model: 'https://models.example/c.onnx', sha256: 'SHA256:{'AB' * 32}', inputs: x}}\n"
    )
    assert model_references(path) == [
        ("models:/fraud@champion", None),
        ("https://models.example/c.onnx", "ab" * 32),
    ]
    path.write_text("nodes: [this is not: a graph")  # its load reports why; a reload sees no references
    assert model_references(path) == []
