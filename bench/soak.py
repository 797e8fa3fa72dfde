"""`make soak`: a long run at 70% of capacity, with reloads, varied batch sizes and logging.

What it checks (issue 9, items 4 and 7), all in one run against `engine serve`:

* zero errors over the whole run (open-loop `loadtest`, latency from intended send time);
* p99 drift: the last minute's p99 within 10% of the first minute's (after warm-up);
* memory: the server's RSS slope under 0.5 MB/min (least squares over samples every 5 s);
* reloads: the fraud graph is edited and reloaded every SOAK_RELOAD_S seconds (about 100
  reloads in 10 minutes), each one validated and swapped while traffic flows;
* the request log holds exactly one record per request sent.

Capacity is measured the way the soak loads the server: ``loadtest capacity`` (open-loop Poisson
arrivals, the soak's own request mix, the same generator) finds the highest constant rate still
answered in full, without errors and with a bounded queue (p99 under 250 ms), on a separate server
set up like the soak's (request log on), starting from half of a quick closed-loop probe. The
closed-loop probe alone overestimates it: 16 callers sending one batch-8 request each reach about
410 req/s on the fraud graph where the open-loop mix of 1-32 rows keeps up to about 340, so "70%"
of the probe was about 85% of what the server can take.

Environment: SOAK_SECONDS (default 600), SOAK_RELOAD_S (6), SOAK_RATE (default: 70% of the
measured capacity), SOAK_KEEP (keep the work folder: graphs, logs, loadtest reports), SOAK_WORKLOAD
(``fraud``, the default, or
``batched``: the one-model graph with dynamic batching and requests of 1 to 100 rows, see
bench/memrun.py; `make memrun` is 5 minutes of it). Exit status 0 when every check passes.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import yaml

from bench import memrun
from bench.run import _fraud_sources, _request, _rss_mb, _wait_ready

ROOT = Path(__file__).resolve().parents[1]
SECONDS = float(os.environ.get("SOAK_SECONDS", "600"))
RELOAD_S = float(os.environ.get("SOAK_RELOAD_S", "6"))
BATCHED = os.environ.get("SOAK_WORKLOAD", "fraud") == "batched"
GRAPH = memrun.GRAPH if BATCHED else "fraud"
BATCHES = (1, 2, 8, 32)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _requests_file(folder: Path) -> Path:
    """Fraud requests of varied batch sizes, in loadtest's JSON Lines request format."""
    rng = np.random.default_rng(7)
    path = folder / "requests.jsonl"
    with path.open("w") as out:
        for i in range(64):
            rows = BATCHES[i % len(BATCHES)]
            amount = rng.choice([20.0, 400.0, 1500.0, 9000.0], size=(rows, 1))
            user_id = [[f"u{u:04d}"] for u in rng.integers(1, 600, size=rows)]  # above u0500: unknown
            txn = np.column_stack(
                [rng.uniform(0, 1, rows), rng.integers(0, 2, rows), rng.integers(0, 24, rows)]
            )
            inputs = {
                "amount": {"datatype": "FP32", "shape": [rows, 1], "data": amount.tolist()},
                "user_id": {"datatype": "BYTES", "shape": [rows, 1], "data": user_id},
                "txn": {"datatype": "FP32", "shape": [rows, 3], "data": txn.tolist()},
            }
            out.write(json.dumps({"inputs": inputs}) + "\n")
    return path


def _closed_loop(url: str) -> float:
    """Closed-loop throughput of 16 callers sending one mid-sized request (a starting point only)."""
    rng = np.random.default_rng(3)
    fraud = {
        "amount": rng.choice([20.0, 1500.0], size=(8, 1)),
        "user_id": np.array([[f"u{u:04d}".encode()] for u in rng.integers(1, 600, size=8)], dtype=object),
        "txn": np.column_stack([rng.uniform(0, 1, 8), rng.integers(0, 2, 8), rng.integers(0, 24, 8)]),
    }
    inputs = memrun.capacity_inputs() if BATCHED else fraud
    payload = base64.b64encode(_request(GRAPH, inputs).SerializeToString()).decode()
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.load",
            "--url",
            url,
            "--payload",
            payload,
            "--concurrency",
            "16",
            "--seconds",
            "5",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(json.loads(out.stdout.strip().splitlines()[-1])["rps"])


def _capacity(url: str, requests: Path, folder: Path) -> tuple[float, float]:
    """(open-loop capacity with the soak's mix, closed-loop probe), both in req/s.

    ``loadtest capacity`` doubles from half the closed-loop figure until a 10 s step fails, then
    bisects to within 5%. A step passes when it is answered in full (95% of its rate), without
    errors, with p99 under 250 ms: past capacity the queue grows all through the step, so its p99
    reaches seconds (measured: 620 ms at 342 req/s where 171 req/s had 23 ms), while an
    answered-in-full test alone still passes rates a few percent over capacity."""
    probe = _closed_loop(url)
    sla = {
        "name": "soak-capacity",
        "target": {"url": url, "graph": GRAPH, "timeout": "5s"},
        "source": {"jsonl": str(requests)},
        "load": {"arrivals": "poisson", "stages": [{"rate": probe, "duration": "10s"}]},
        "assertions": {"errors": {"max_rate": "0%"}, "latency": {"p99": "250ms"}},
        "capacity": {"start": round(probe / 2), "step": "10s", "warmup": "2s", "precision": 0.05},
    }
    (folder / "capacity.yaml").write_text(yaml.safe_dump(sla))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "loadtest.cli",
            "capacity",
            str(folder / "capacity.yaml"),
            "--out",
            str(folder / "capacity"),
            "--quiet",
            "--no-plots",
        ],
        cwd=ROOT,
        capture_output=True,
        check=False,  # exit 1 when no step passed: read below
    )
    found = json.loads((folder / "capacity" / "report.json").read_text())["capacity"]["capacity_rate"]
    if not found:
        raise RuntimeError(f"capacity search found no rate that passes: see {folder / 'capacity'}")
    return float(found), probe


def _reloader(graph_yaml: Path, url: str, stop: threading.Event, counts: dict[str, int]) -> None:
    """Edit the fraud graph's version and threshold, then ask the server to reload it."""
    version = 1
    while not stop.wait(RELOAD_S):
        version += 1
        doc = graph_yaml.read_text()
        lines = [line for line in doc.splitlines() if not line.startswith("version:")]
        graph_yaml.write_text("\n".join([f"version: {version}", *lines]) + "\n")
        result = subprocess.run(
            [sys.executable, "-m", "engine.cli", "reload", GRAPH, "--url", url],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        counts["ok" if result.returncode == 0 else "failed"] += 1


def _calibrate(graphs: Path, log_dir: Path, requests: Path, folder: Path) -> float:
    """70% of capacity, measured on a separate server set up like the soak's (logging on)."""
    port = _port()
    probe = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "engine.cli",
            "serve",
            str(graphs),
            "--port",
            str(port),
            "--workers",
            "1",
            "--metrics-port",
            "-1",
            "--http-port",
            "-1",
            "--request-log",
            str(log_dir),
            "--log-level",
            "WARNING",
        ],
        cwd=ROOT,
    )
    try:
        _wait_ready(f"127.0.0.1:{port}", probe)
        capacity, closed = _capacity(f"127.0.0.1:{port}", requests, folder)
        print(
            f"soak: capacity {capacity:.0f} req/s (open loop, the soak's request mix; "
            f"a closed-loop batch-8 probe says {closed:.0f})",
            flush=True,
        )
        return round(0.7 * capacity)
    finally:
        probe.terminate()
        probe.wait(60)


def _slope_mb_per_min(samples: list[tuple[float, float]]) -> float:
    t = np.array([s[0] for s in samples]) / 60.0
    rss = np.array([s[1] for s in samples])
    return float(np.polyfit(t, rss, 1)[0]) if len(samples) >= 3 else 0.0


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="soak-"))
    graphs = work / "graphs"
    if BATCHED:
        memrun.setup(graphs)
    else:
        shutil.copytree(ROOT / "graphs" / "fraud", graphs / "fraud")
        _fraud_sources(graphs)
    logs = work / "logs"
    port, metrics = _port(), _port()
    url = f"127.0.0.1:{port}"
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "engine.cli",
            "serve",
            str(graphs),
            "--port",
            str(port),
            "--workers",
            "1",  # one process: its RSS is the worker's
            "--metrics-port",
            str(metrics),
            "--http-port",
            "-1",
            "--request-log",
            str(logs),
            "--log-level",
            "WARNING",
        ],
        cwd=ROOT,
    )
    try:
        _wait_ready(url, server)
        requests = memrun.requests_file(work) if BATCHED else _requests_file(work)
        rate = float(os.environ.get("SOAK_RATE", "0")) or _calibrate(
            graphs, work / "calibration-logs", requests, work
        )
        print(
            f"soak: {SECONDS:.0f} s at {rate:.0f} req/s (70% of capacity), reload every {RELOAD_S:g} s",
            flush=True,
        )
        sla = {
            "name": "soak",
            "target": {
                "url": url,
                "graph": GRAPH,
                "timeout": "5s",
                "metrics": f"http://127.0.0.1:{metrics}/metrics",
            },
            "source": {"jsonl": str(requests)},
            "load": {
                "warmup": "10s",
                "arrivals": "poisson",
                "stages": [{"rate": rate, "duration": f"{SECONDS:.0f}s"}],
            },
            "assertions": {"errors": {"max_rate": "0%"}},
        }
        (work / "soak.yaml").write_text(yaml.safe_dump(sla))
        stop = threading.Event()
        reloads = {"ok": 0, "failed": 0}
        reloader = threading.Thread(
            target=_reloader, args=(graphs / GRAPH / "graph.yaml", url, stop, reloads)
        )
        samples: list[tuple[float, float]] = []

        def sample_memory() -> None:
            t0 = time.monotonic()
            while not stop.wait(5.0):
                samples.append((time.monotonic() - t0, _rss_mb(server.pid)))

        sampler = threading.Thread(target=sample_memory, daemon=True)
        reloader.start()
        sampler.start()
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "loadtest.cli",
                "run",
                str(work / "soak.yaml"),
                "--out",
                str(work / "report"),
                "--quiet",
                "--no-plots",
            ],
            cwd=ROOT,
        )
        stop.set()
        reloader.join()
        report = json.loads((work / "report" / "report.json").read_text())
        # every phase, warm-up included, plus loadtest's one preflight request before the schedule
        sent = sum(row["requests"] for row in report["timeline"]) + 1
    finally:
        server.terminate()
        server.wait(60)
    measured = [row for row in report["timeline"] if row["phase"] != "warmup" and row["requests"]]
    minute = max(1, min(60, len(measured) // 3))
    first = max(row["p99_us"] for row in measured[:minute])
    last = max(row["p99_us"] for row in measured[-minute:])
    drift = (last - first) / first if first else 0.0
    settled = [s for s in samples if s[0] >= 30.0] or samples
    slope = _slope_mb_per_min(settled)
    from engine.observability.log_reader import read_records

    records = sum(1 for _ in read_records(logs))
    summary = report["summary"]
    checks = [
        ("zero errors", summary["errors"] == 0, f"{summary['errors']} errors of {summary['requests']}"),
        (
            "p99 drift within 10%",
            drift <= 0.10,
            f"first {first / 1000:.2f} ms, last {last / 1000:.2f} ms ({drift:+.1%})",
        ),
        ("memory slope < 0.5 MB/min", slope < 0.5, f"{slope:+.3f} MB/min over {len(settled)} samples"),
        (
            "every reload succeeded",
            reloads["failed"] == 0 and reloads["ok"] > 0,
            f"{reloads['ok']} ok, {reloads['failed']} failed",
        ),
        (
            "one log record per request",
            records == sent,
            f"{records} records, {sent} requests sent",
        ),
    ]
    print(f"\nsoak ({SECONDS:.0f} s, {summary['requests']:,} requests measured)")
    for name, ok, detail in checks:
        print(f"  {'pass' if ok else 'FAIL'}  {name}: {detail}")
    name = "memrun" if BATCHED else "soak"
    out = ROOT / "bench" / "results" / time.strftime(f"{name}-%Y%m%dT%H%M%S.json")
    out.write_text(
        json.dumps(
            {
                "seconds": SECONDS,
                "checks": [{"name": n, "ok": o, "detail": d} for n, o, d in checks],
                "rss_samples": samples,
                "loadtest_exit": run.returncode,
            },
            indent=2,
        )
    )
    if os.environ.get("SOAK_KEEP"):
        print(f"work folder kept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if all(ok for _, ok, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
