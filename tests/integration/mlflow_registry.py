"""A real MLflow tracking server for tests: SQLite backend, proxied local artifacts, loopback port.

Models are registered in it with the mlflow client, exactly as a modeller does
(``mlflow.onnx.log_model(..., registered_model_name=...)``), and moved with aliases.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import onnx
from onnx import TensorProto, helper

START_TIMEOUT_S = 120.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MlflowServer:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> MlflowServer:
        command = [
            str(Path(sys.executable).with_name("mlflow")),
            "server",
            "--backend-store-uri",
            f"sqlite:///{self.root / 'mlflow.db'}",
            "--artifacts-destination",
            str(self.root / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
        ]
        log = (self.root / "mlflow.log").open("wb")
        self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=self.root)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {(self.root / 'mlflow.log').read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError("mlflow server did not answer /health in time")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def register(self, name: str, model: onnx.ModelProto) -> str:
        """Log ``model`` as an MLflow ONNX model and register it as a new version of ``name``."""
        import mlflow

        os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
        mlflow.set_tracking_uri(self.url)
        with mlflow.start_run():
            info = mlflow.onnx.log_model(model, name="model", registered_model_name=name, pip_requirements=[])
        version = info.registered_model_version
        return str(version)

    def set_alias(self, name: str, alias: str, version: str) -> None:
        from mlflow import MlflowClient

        MlflowClient(self.url).set_registered_model_alias(name, alias, version)


def flipped(model_path: Path, output: str) -> onnx.ModelProto:
    """The model at ``model_path`` answering ``1 - output``: same signature, different numbers."""
    model = onnx.load(str(model_path))
    graph = model.graph
    raw = f"{output}_before_flip"
    for node in graph.node:
        node.output[:] = [raw if o == output else o for o in node.output]
    graph.initializer.append(helper.make_tensor("flip_one", TensorProto.FLOAT, [], [1.0]))
    graph.node.append(helper.make_node("Sub", ["flip_one", raw], [output]))
    onnx.checker.check_model(model)
    return model
