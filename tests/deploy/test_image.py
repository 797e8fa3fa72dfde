"""The Dockerfile, read as the image it builds (no container engine is needed): its contract, and its
command line run for real with the image's environment, answering gRPC health as the kubelet asks it."""

from __future__ import annotations

import fnmatch
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.deploy.conftest import ROOT

DOCKERFILE = ROOT / "Dockerfile"


def _instructions(stage: str | None = None) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the last stage (or the named one), continuation lines joined."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    stages: list[list[tuple[str, str]]] = []
    for line in lines:
        word, _, rest = line.partition(" ")
        if word.upper() == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((word.upper(), rest.strip()))
    if stage is None:
        return stages[-1]
    (found,) = [s for s in stages if s[0][1].endswith(f" AS {stage}")]
    return found


def _json_form(name: str) -> list[str]:
    (value,) = [rest for word, rest in _instructions() if word == name]
    return json.loads(value)


def _env() -> dict[str, str]:
    env: dict[str, str] = {}
    for word, rest in _instructions():
        if word == "ENV":
            for pair in shlex.split(rest):
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def test_runtime_stage_is_slim_pinned_and_non_root() -> None:
    header = DOCKERFILE.read_text().split("\nFROM", 1)[0]
    (arg,) = [line for line in header.splitlines() if line.startswith("ARG PYTHON_IMAGE=")]
    image = arg.split("=", 1)[1]
    name, _, tag = image.partition(":")
    assert name == "python" and "slim" in tag and tag.count(".") >= 2, "pinned to a patch release"
    froms = [rest for word, rest in _instructions() if word == "FROM"]
    assert froms == ["${PYTHON_IMAGE} AS runtime"]
    (user,) = [rest for word, rest in _instructions() if word == "USER"]
    assert user.split(":")[0].isdigit() and user.split(":")[0] != "0"
    copied = " ".join(rest for word, rest in _instructions() if word == "COPY")
    assert "scikit" not in copied and "/opt/build" not in copied  # training stays in the models stage


def test_exposes_grpc_and_metrics_and_stops_with_sigterm() -> None:
    exposed = {p for word, rest in _instructions() if word == "EXPOSE" for p in rest.split()}
    assert exposed == {"8000", "8001", "8002"}
    assert [rest for word, rest in _instructions() if word == "STOPSIGNAL"] == ["SIGTERM"]
    env = _env()
    assert env["ENGINE_PORT"] == "8001" and env["ENGINE_METRICS_PORT"] == "8002"
    assert env["ENGINE_HTTP_PORT"] == "8000"
    assert env["ENGINE_HOST"] == "0.0.0.0"


def test_entrypoint_and_cmd_are_engine_serve_graphs() -> None:
    assert _json_form("ENTRYPOINT") + _json_form("CMD") == ["engine", "serve", "/graphs"]


def test_engine_config_is_baked_where_engine_config_points() -> None:
    copies = [rest.split() for word, rest in _instructions() if word == "COPY" and "--from" not in rest]
    assert ["deploy/engine.yaml", _env()["ENGINE_CONFIG"]] in copies


def test_dockerignore_lets_through_every_copy_source() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip()[:1] not in "#"
    ]
    assert patterns[0] == "*", "an allow-list: nothing enters the build context unless named"

    def included(path: str) -> bool:
        keep = True
        for pattern in patterns:
            negated = pattern.startswith("!")
            body = pattern.lstrip("!").rstrip("/")
            if fnmatch.fnmatch(path, body) or path.startswith(body + "/"):
                keep = negated
        return keep

    sources = []
    for stage in ("build", "models", None):
        for word, rest in _instructions(stage):
            if word == "COPY" and "--from" not in rest:
                sources += rest.split()[:-1]
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), source
        assert included(source), f"{source} is excluded by .dockerignore"
    assert not included(".venv") and not included("tests") and not included(".git")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_images_command_serves_health_and_drains_on_sigterm(example_graphs: Path) -> None:
    """ENTRYPOINT + CMD with the image's ENV, /graphs and /etc/engine mapped to their sources."""
    env = dict(os.environ, **_env())
    env.pop("PATH")  # the image's PATH names its venv; keep ours
    env["PATH"] = os.environ["PATH"]
    env.update(
        ENGINE_CONFIG=str(ROOT / "deploy" / "engine.yaml"),
        ENGINE_HOST="127.0.0.1",
        ENGINE_PORT=str(_free_port()),
        ENGINE_METRICS_PORT=str(_free_port()),
        ENGINE_HTTP_PORT=str(_free_port()),
        PYTHONUNBUFFERED="1",
    )
    entrypoint, command = _json_form("ENTRYPOINT"), _json_form("CMD")
    assert entrypoint[0] == "engine"
    graphs = [str(example_graphs) if arg == "/graphs" else arg for arg in command]
    argv = [sys.executable, "-m", "engine.cli", *entrypoint[1:], *graphs]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{env['ENGINE_PORT']}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            deadline = time.monotonic() + 60
            status = None
            while status != health_pb2.HealthCheckResponse.SERVING:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr and proc.stderr.read()
                try:
                    status = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=1).status
                except grpc.RpcError:
                    time.sleep(0.1)
            for graph in ("fraud", "quickstart"):
                reply = health.Check(health_pb2.HealthCheckRequest(service=graph), timeout=1)
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
