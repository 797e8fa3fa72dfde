"""The batching and memory part of `make bench`: the one-model graph at concurrency 64 with
and without dynamic batching, and `--workers 2` for the resident memory of each worker.

``bench.run`` adds these scenarios to its list and these lines to its report: infer/s,
p50/p99 and the batched/unbatched ratio; the mean batch the server ran (from its
``engine_node_batch_size`` histogram); whether the batched p99 stays within
``max_queue_delay`` plus one model run (that run measured here, on 64 rows); and the
steady-state RSS of each worker (sampled right after each measurement).
"""

from __future__ import annotations

import socket
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MLP = ROOT / "bench" / "models" / "mlp32.onnx"
WIDE = ROOT / "bench" / "models" / "mlp_wide.onnx"
CONCURRENCY = 64
MAX_BATCH_SIZE = 64
MAX_QUEUE_DELAY_MS = 2.0
BATCHED = f"""\
inputs:
  x: {{datatype: FP32, shape: [-1, 32]}}
nodes:
  mlp:
    model: mlp32.onnx
    inputs: {{x: inputs.x}}
    batching: {{max_batch_size: {MAX_BATCH_SIZE}, max_queue_delay: {MAX_QUEUE_DELAY_MS:g}ms}}
outputs:
  y: mlp.y
"""


WIDE_UNBATCHED = """\
inputs:
  x: {datatype: FP32, shape: [-1, 512]}
nodes:
  mlp: {model: mlp_wide.onnx, inputs: {x: inputs.x}}
outputs:
  y: mlp.y
"""
WIDE_BATCHED = f"""\
inputs:
  x: {{datatype: FP32, shape: [-1, 512]}}
nodes:
  mlp:
    model: mlp_wide.onnx
    inputs: {{x: inputs.x}}
    batching: {{max_batch_size: {MAX_BATCH_SIZE}, max_queue_delay: {MAX_QUEUE_DELAY_MS:g}ms}}
outputs:
  y: mlp.y
"""
GRAPHS = {"mlp_batched": (BATCHED, MLP), "wide": (WIDE_UNBATCHED, WIDE), "wide_batched": (WIDE_BATCHED, WIDE)}
"""Graph folders the batching scenarios serve: name -> (graph.yaml, model file)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def with_metrics_port(command: list[str], port: int) -> list[str]:
    """``command`` (an ``engine serve`` line) serving /metrics on ``port``."""
    out = list(command)
    out[out.index("--metrics-port") + 1] = str(port)
    return out


def with_workers(command: list[str], workers: int) -> list[str]:
    out = list(command)
    out[out.index("--workers") + 1] = str(workers)
    return out


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def worker_rss_mb(pid: int) -> list[float]:
    """RSS of each serving process: the workers of a ``--workers N`` supervisor, else ``pid`` itself."""
    return [rss_mb(child) for child in children(pid)] or [rss_mb(pid)]


def batch_sizes(metrics_port: int) -> dict[str, float]:
    """Batches and rows the server's batching nodes ran so far (its ``engine_node_batch_size``)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    totals = {"batches": 0.0, "rows": 0.0}
    for family in text_string_to_metric_families(text):
        if family.name == "engine_node_batch_size":
            for sample in family.samples:
                if sample.name.endswith("_count"):
                    totals["batches"] += sample.value
                elif sample.name.endswith("_sum"):
                    totals["rows"] += sample.value
    return totals


def model_run_ms(rows: int, runs: int = 300, model: Path = MLP) -> float:
    """Median onnxruntime run of ``model`` on ``rows`` rows, one intra-op thread (as the engine runs it)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(model), sess_options=options, providers=["CPUExecutionProvider"])
    width = session.get_inputs()[0].shape[1]
    feed = {session.get_inputs()[0].name: np.zeros((rows, width), np.float32)}
    session.run(None, feed)
    took = []
    for _ in range(runs):
        t0 = time.perf_counter_ns()
        session.run(None, feed)
        took.append(time.perf_counter_ns() - t0)
    return float(np.median(took)) / 1e6


def report_lines(rows: list[dict[str, Any]]) -> list[str]:
    def pick(name: str) -> dict[str, Any] | None:
        return next((r for r in rows if r["scenario"] == name), None)

    lines: list[str] = []
    plain, batched = pick("engine-mlp-c64"), pick("engine-mlp-batched")
    if plain and batched:
        run_ms = model_run_ms(MAX_BATCH_SIZE)
        bound = MAX_QUEUE_DELAY_MS + run_ms
        met = batched["p99_ms"] <= bound
        mean = batched.get("mean_batch")
        lines += [
            f"\nbatching, one-model graph, c={CONCURRENCY} (max_batch_size {MAX_BATCH_SIZE}, max_queue_delay "
            f"{MAX_QUEUE_DELAY_MS:g} ms):",
            f"  unbatched {plain['rps']:,.0f} infer/s, p50 {plain['p50_ms']:.2f} ms, "
            f"p99 {plain['p99_ms']:.2f} ms",
            f"  batched   {batched['rps']:,.0f} infer/s, p50 {batched['p50_ms']:.2f} ms, p99 "
            f"{batched['p99_ms']:.2f} ms" + (f", mean batch {mean:.1f} rows" if mean else ""),
            f"  batched/unbatched {batched['rps'] / plain['rps']:.2f}x; server CPU/req "
            f"{batched['server_cpu_us_per_req']:.0f} vs {plain['server_cpu_us_per_req']:.0f} µs",
            f"  p99 <= max_queue_delay + one {MAX_BATCH_SIZE}-row run "
            f"({MAX_QUEUE_DELAY_MS:g} + {run_ms:.3f} = {bound:.3f} ms): {'yes' if met else 'no'}; "
            f"batching changed p99 by {batched['p99_ms'] - plain['p99_ms']:+.2f} ms",
        ]
    plain, batched = pick("engine-wide-c64"), pick("engine-wide-batched")
    if plain and batched:
        one, full = model_run_ms(1, 30, WIDE), model_run_ms(MAX_BATCH_SIZE, 30, WIDE)
        bound = MAX_QUEUE_DELAY_MS + 2 * full
        mean = batched.get("mean_batch")
        lines += [
            f"\nbatching, the wide model (512-2048-2048-1: {one:.2f} ms a row alone, {full:.2f} ms for "
            f"{MAX_BATCH_SIZE} rows), c={CONCURRENCY}:",
            f"  unbatched {plain['rps']:,.0f} infer/s, p99 {plain['p99_ms']:.2f} ms",
            f"  batched   {batched['rps']:,.0f} infer/s, p99 {batched['p99_ms']:.2f} ms"
            + (f", mean batch {mean:.1f} rows" if mean else ""),
            f"  batched/unbatched {batched['rps'] / plain['rps']:.2f}x (target >= 3x)",
            f"  p99 <= max_queue_delay + two {MAX_BATCH_SIZE}-row runs ({bound:.2f} ms): "
            + ("yes" if batched["p99_ms"] <= bound else "no"),
        ]
    memory = [r for r in rows if r.get("worker_rss_mb")]
    if memory:
        lines.append("\nsteady-state RSS per worker (MB, after each scenario's last measurement):")
        for name in dict.fromkeys(r["scenario"] for r in memory if r["scenario"].startswith("engine-")):
            last = [r for r in memory if r["scenario"] == name][-1]
            workers = ", ".join(f"{mb:.0f}" for mb in last["worker_rss_mb"])
            parent = f" (supervisor {last['server_rss_mb']:.0f})" if len(last["worker_rss_mb"]) > 1 else ""
            lines.append(f"  {name:<24} {workers}{parent}")
    return lines
