"""`make bench-peers`: the engine against what users would pick instead, in one run.

Every server serves the same 32→64→1 MLP (``bench/models/mlp32.onnx``) over gRPC V2 and is
driven by the same closed-loop load generator (``bench.load``), pinned as in ``make bench``
(server on one core, load generator on the other):

* ``floor-echo``: bare grpc.aio answering V2 ModelInfer without a model (the Python floor),
  and the same floor on asyncio's loop and on grpc's thread-pool server (``floor-echo-sync``,
  ``floor-mlp-sync`` with the model): the transports the engine could be built on;
* ``engine-mlp`` / ``engine-chain2``: this engine, the model alone and the model followed by
  ``sigmoid`` in an expression node; the ``-threads`` rows are the same inference core behind
  grpc's thread-pool server (``bench/engine_threads.py``): the transport compared on the graphs;
* ``triton-mlp`` / ``triton-chain2``: Triton (the ``tritonserver`` binary of the
  ``nvidia-pytriton`` wheel) with a python-backend model running onnxruntime, and an ensemble
  of that model and a python-backend sigmoid;
* ``mlserver-mlp``: MLServer with a custom onnxruntime runtime, ``parallel_workers: 0``.

The peers live in their own virtual environment (``.venv-peers``, made by ``make bench-peers``)
so that their pinned dependencies never touch the engine's. Triton's python stub runs on the
system libpython 3.11, so its models put the peers venv's site-packages (numpy 1.x, onnxruntime)
on ``sys.path`` themselves (with numpy 2 the stub hands back empty tensors). Server CPU counts
the server and its children (Triton's stubs).

Environment: as ``make bench`` (BENCH_SECONDS, BENCH_CONCURRENCY), plus PEERS_VENV and
BENCH_ONLY (comma-separated scenario names).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench import run
from bench.run import MLP, ROOT, Scenario, _request

PEERS_VENV = Path(os.environ.get("PEERS_VENV", ROOT / ".venv-peers"))
CHAIN2 = """\
inputs:
  x: {datatype: FP32, shape: [-1, 32]}
nodes:
  mlp: {model: mlp32.onnx, inputs: {x: inputs.x}}
  p: {transform: expr, expr: "sigmoid(mlp.y)"}
outputs:
  p: p
"""

_ORT_MODEL = '''\
"""Triton python-backend model: {what} (written by bench/peers.py)."""
import sys

sys.path[:0] = {paths!r}  # the stub runs on the system libpython: numpy and onnxruntime come from a venv

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
{initialize}

    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "{input}").as_numpy()
{compute}
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("{output}", out)]))
        return responses
'''

_MLP_INIT = """\
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession({model!r}, options, providers=["CPUExecutionProvider"])"""

_CONFIG = """\
name: "{name}"
backend: "python"
max_batch_size: 0
input [ {{ name: "{input}" data_type: TYPE_FP32 dims: [ -1, {width} ] }} ]
output [ {{ name: "{output}" data_type: TYPE_FP32 dims: [ -1, 1 ] }} ]
instance_group [ {{ kind: KIND_CPU count: 1 }} ]
"""

_ENSEMBLE = """\
name: "chain2"
platform: "ensemble"
max_batch_size: 0
input [ { name: "x" data_type: TYPE_FP32 dims: [ -1, 32 ] } ]
output [ { name: "p" data_type: TYPE_FP32 dims: [ -1, 1 ] } ]
ensemble_scheduling {
  step [
    {
      model_name: "mlp" model_version: -1
      input_map { key: "x" value: "x" } output_map { key: "y" value: "mid" }
    },
    {
      model_name: "sigmoid" model_version: -1
      input_map { key: "y" value: "mid" } output_map { key: "p" value: "p" }
    }
  ]
}
"""

_MLSERVER_RUNTIME = '''\
"""MLServer runtime running the MLP with onnxruntime (written by bench/peers.py)."""
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class OnnxMLP(MLModel):
    async def load(self) -> bool:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        uri = self.settings.parameters.uri
        self.session = ort.InferenceSession(uri, options, providers=["CPUExecutionProvider"])
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = NumpyCodec.decode_input(payload.inputs[0])
        (y,) = self.session.run(["y"], {"x": x})
        return InferenceResponse(model_name=self.name, outputs=[NumpyCodec.encode_output("y", y)])
'''


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _peer_site_packages() -> Path:
    found = sorted((PEERS_VENV / "lib").glob("python3*/site-packages"))
    if not found:
        raise SystemExit(f"no peers venv at {PEERS_VENV}: run `make bench-peers`")
    return found[0]


def triton_repository(folder: Path) -> tuple[Path, Path]:
    """A model repository (mlp, sigmoid, the chain2 ensemble) and a backend folder holding the
    python backend with the stub for Python 3.11; returns (repository, backends)."""
    site = _peer_site_packages()
    server = site / "pytriton" / "tritonserver"
    backends = folder / "backends"
    shutil.copytree(server / "backends", backends)
    shutil.copy(server / "python_backend_stubs" / "3.11" / "triton_python_backend_stub", backends / "python")
    paths = [str(site)]  # numpy 1.x: the stub's numpy bridge reads empty arrays from numpy 2
    repository = folder / "models"
    run_mlp = '            (out,) = self.session.run(["y"], {"x": x})'
    run_sigmoid = "            out = (1.0 / (1.0 + np.exp(-x))).astype(np.float32)"
    models = {
        "mlp": ("the MLP in onnxruntime", "x", "y", 32, _MLP_INIT.format(model=str(MLP)), run_mlp),
        "sigmoid": ("sigmoid", "y", "p", 1, "        pass", run_sigmoid),
    }
    for name, (what, inp, out, width, initialize, compute) in models.items():
        (repository / name / "1").mkdir(parents=True)
        (repository / name / "config.pbtxt").write_text(
            _CONFIG.format(name=name, input=inp, output=out, width=width)
        )
        (repository / name / "1" / "model.py").write_text(
            _ORT_MODEL.format(
                what=what, paths=paths, initialize=initialize, input=inp, compute=compute, output=out
            )
        )
    (repository / "chain2" / "1").mkdir(parents=True)
    (repository / "chain2" / "config.pbtxt").write_text(_ENSEMBLE)
    return repository, backends


def mlserver_folder(folder: Path, port: int) -> Path:
    models = folder / "mlserver"
    (models / "mlp").mkdir(parents=True)
    (models / "peer_runtime.py").write_text(_MLSERVER_RUNTIME)
    settings = {
        "host": "127.0.0.1",
        "grpc_port": port,
        "http_port": _free_port(),
        "metrics_port": _free_port(),
        "parallel_workers": 0,
        "debug": False,
    }
    (models / "settings.json").write_text(json.dumps(settings))
    model = {"name": "mlp", "implementation": "peer_runtime.OnnxMLP", "parameters": {"uri": str(MLP)}}
    (models / "mlp" / "model-settings.json").write_text(json.dumps(model))
    return models


def scenarios(folder: Path, port: int, http_port: int) -> list[Scenario]:
    x = np.random.default_rng(0).normal(size=(1, 32)).astype(np.float32)
    graphs = folder / "graphs"
    for name, text in (("mlp", run.SINGLE), ("chain2", CHAIN2)):
        (graphs / name).mkdir(parents=True)
        (graphs / name / "graph.yaml").write_text(text)
        shutil.copy(MLP, graphs / name / "mlp32.onnx")
    engine = [
        sys.executable, "-m", "engine.cli", "serve", str(graphs), "--port", str(port),
        "--log-level", "WARNING", "--metrics-port", "-1", "--workers", "1", "--http-port", str(http_port),
    ]  # fmt: skip
    repository, backends = triton_repository(folder)
    site = _peer_site_packages()
    triton = [
        str(site / "pytriton" / "tritonserver" / "bin" / "tritonserver"),
        f"--model-repository={repository}", f"--backend-directory={backends}",
        "--grpc-address=127.0.0.1", f"--grpc-port={port}", "--allow-http=false", "--allow-metrics=false",
        "--log-verbose=0",
    ]  # fmt: skip
    triton_env = (("LD_LIBRARY_PATH", str(site / "nvidia_pytriton.libs")),)
    mlserver = mlserver_folder(folder, port)
    floor = [sys.executable, "-m", "bench.floor_server", "--port", str(port), "--model", str(MLP)]
    echo, mlp, chain = (_request(name, {"x": x}) for name in ("echo", "mlp", "chain2"))
    mlserver_command = [str(PEERS_VENV / "bin" / "mlserver"), "start", str(mlserver)]
    threads = [
        sys.executable, "-m", "bench.engine_threads", str(graphs), "--port", str(port), "--threads", "16",
    ]  # fmt: skip
    return [
        Scenario("floor-echo", [*floor, "--mode", "echo"], echo, "bare grpc.aio on uvloop, no model"),
        Scenario(
            "floor-echo-asyncio", [*floor, "--mode", "echo", "--transport", "aio-asyncio"], echo,
            "bare grpc.aio on asyncio's own loop, no model",
        ),
        Scenario(
            "floor-echo-sync", [*floor, "--mode", "echo", "--transport", "sync", "--threads", "8"], echo,
            "bare grpc.server, 8 handler threads, no model",
        ),
        Scenario(
            "floor-echo-sync-to-loop",
            [*floor, "--mode", "echo", "--transport", "sync-to-loop", "--threads", "8"], echo,
            "bare grpc.server, 8 threads, each call run on one asyncio loop",
        ),
        Scenario(
            "floor-mlp-sync", [*floor, "--mode", "ort-inline", "--transport", "sync", "--threads", "8"], mlp,
            "bare grpc.server, 8 threads, onnxruntime in the handler",
        ),
        Scenario("engine-mlp", engine, mlp, "this engine, one-model graph"),
        Scenario(
            "engine-mlp-threads", threads, mlp,
            "this engine's core behind grpc.server, 16 threads (bench/engine_threads.py)",
        ),
        Scenario(
            "engine-mlp-stream", engine, mlp, "this engine, one-model, ModelStreamInfer", driver="stream"
        ),
        Scenario(
            "engine-mlp-http-binary", engine, mlp, "this engine, one-model graph over HTTP, binary tensors",
            driver="http", http=run._http_infer("mlp", x, binary=True),
        ),
        Scenario("triton-mlp", triton, mlp, "Triton 2.51, python backend + onnxruntime", triton_env),
        Scenario(
            "mlserver-mlp", mlserver_command, mlp, "MLServer 1.7.1, onnxruntime runtime, parallel_workers 0",
            (("PYTHONPATH", str(mlserver)),),
        ),
        Scenario("engine-chain2", engine, chain, "this engine, model + sigmoid expression"),
        Scenario(
            "engine-chain2-threads", threads, chain, "this engine's core behind grpc.server, model + sigmoid"
        ),
        Scenario("triton-chain2", triton, chain, "Triton ensemble of the same two steps", triton_env),
    ]  # fmt: skip


def report(rows: list[dict[str, object]]) -> str:
    hi, lo = max(run.CONCURRENCY), min(run.CONCURRENCY)

    def pick(name: str, c: int) -> dict | None:  # type: ignore[type-arg]
        return next((r for r in rows if r["scenario"] == name and r["concurrency"] == c), None)

    lines = [
        f"| server | infer/s c={hi} | p50 ms c={lo} | p99 ms c={hi} | server CPU/infer µs | vs echo floor |",
        "|---|---|---|---|---|---|",
    ]
    echo = pick("floor-echo", hi)
    for name in dict.fromkeys(str(r["scenario"]) for r in rows):
        top, one = pick(name, hi), pick(name, lo)
        if top is None or one is None:
            continue
        ratio = f"{top['rps'] / echo['rps']:.2f}" if echo else "-"
        lines.append(
            f"| {name}: {top['note']} | {top['rps']:,.0f} | {one['p50_ms']:.3f} | {top['p99_ms']:.3f} "
            f"| {top['server_cpu_us_per_req']:.0f} | {ratio} |"
        )
    lines.append("")
    for mine, theirs in (
        ("engine-mlp", "triton-mlp"), ("engine-mlp-stream", "triton-mlp"),
        ("engine-mlp-http-binary", "triton-mlp"),
        ("engine-mlp", "mlserver-mlp"), ("engine-chain2", "triton-chain2"),
        ("engine-mlp-threads", "engine-mlp"), ("engine-chain2-threads", "engine-chain2"),
        ("floor-echo-sync", "floor-echo"), ("engine-chain2", "engine-mlp"),
    ):  # fmt: skip
        a, b = pick(mine, hi), pick(theirs, hi)
        if a and b:
            lines.append(f"{mine} / {theirs} at c={hi}: {a['rps'] / b['rps']:.2f}x infer/s")
    return "\n".join(lines)


def main() -> int:
    if not MLP.exists():
        raise SystemExit("bench/models/mlp32.onnx is missing: run `make models`")
    only = set(filter(None, os.environ.get("BENCH_ONLY", "").split(",")))
    folder = Path(tempfile.mkdtemp(prefix="bench-peers-"))
    print(
        f"server on core {run.SERVER_CORE}, load generator on core {run.CLIENT_CORE}, "
        f"{run.SECONDS:g} s per measurement",
        flush=True,
    )
    rows: list[dict[str, object]] = []
    try:
        port, http_port = _free_port(), _free_port()
        for scenario in scenarios(folder, port, http_port):
            if not only or scenario.name in only:
                rows.extend(run.measure(scenario, port, http_port))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print("\n" + report(rows))
    out = ROOT / "bench" / "results" / time.strftime("peers-%Y%m%dT%H%M%S.json")
    with contextlib.suppress(OSError):
        out.write_text(json.dumps({"seconds": run.SECONDS, "rows": rows}, indent=2))
        print(f"\nwrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
