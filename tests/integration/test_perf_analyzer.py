"""Triton's own perf_analyzer drives a graph and prints a per-node breakdown.

perf_analyzer refuses to run unless ModelMetadata, ModelConfig (inputs matching
the metadata), ServerMetadata and ModelStatistics answer as Triton's do; for an
``ensemble`` it also asks for every step's config and statistics. This is the
strictest compatibility check we have.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.server_thread import ServerThread


def _perf_analyzer() -> tuple[str, dict[str, str]]:
    binary = shutil.which("perf_analyzer", path=str(Path(sys.executable).parent))
    if binary is None:
        pytest.skip("perf_analyzer is not installed (it ships in the tritonclient wheel)")
    env = dict(os.environ)
    try:
        import nvidia.cuda_runtime  # type: ignore[import-not-found]

        lib = Path(next(iter(nvidia.cuda_runtime.__path__))) / "lib"
        env["LD_LIBRARY_PATH"] = f"{lib}:{env.get('LD_LIBRARY_PATH', '')}"
    except ImportError:
        pass
    probe = subprocess.run([binary, "--version"], capture_output=True, text=True, env=env)
    if "error while loading shared libraries" in probe.stderr:
        pytest.skip(f"perf_analyzer cannot start here: {probe.stderr.strip()} (CI installs libb64-0d)")
    return binary, env


@pytest.mark.parametrize(
    ("graph", "nodes"),
    [
        # perf_analyzer sends zeros (empty user_id strings): unknown users, which get the graph's defaults
        ("fraud", ["user", "ip_risk", "risk_route", "score", "decision"]),
        ("quickstart", ["embed", "clipped", "classify"]),
    ],
)
def test_perf_analyzer_measures_a_graph_with_per_node_statistics(
    example_graphs: Path, graph: str, nodes: list[str]
) -> None:
    binary, env = _perf_analyzer()
    with ServerThread(example_graphs) as server:
        run = subprocess.run(
            [
                binary,
                "-m",
                graph,
                "-i",
                "grpc",
                "-u",
                server.url,
                "--concurrency-range",
                "2",
                "--measurement-mode",
                "count_windows",
                "--measurement-request-count",
                "200",
                # This test checks compatibility, not speed: on a shared 2-core machine the
                # default 10% stability band can take more than 10 windows to reach.
                "--stability-percentage",
                "500",
                "--max-trials",
                "20",
                # Zeros, not perf_analyzer's default random bytes: the fraud graph's data contract
                # rejects an `amount` of 1.8e31 (as it should).
                "--input-data",
                "zero",
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "Composing models:" in run.stdout
    for node in nodes:
        assert f"{graph}.{node}, version: 1" in run.stdout
    throughput = re.search(r"throughput: ([\d.]+) infer/sec", run.stdout)
    assert throughput and float(throughput.group(1)) > 0


@pytest.mark.parametrize("door", ["http", "grpc-streaming"])
def test_perf_analyzer_drives_the_http_door_and_grpc_streams(example_graphs: Path, door: str) -> None:
    binary, env = _perf_analyzer()
    with ServerThread(example_graphs) as server:
        protocol = (
            ["-i", "http", "-u", server.http_url]
            if door == "http"
            else ["-i", "grpc", "--streaming", "-u", server.url]
        )
        run = subprocess.run(
            [
                binary,
                "-m",
                "quickstart",
                *protocol,
                "--concurrency-range",
                "2",
                "--measurement-mode",
                "count_windows",
                "--measurement-request-count",
                "200",
                "--stability-percentage",
                "500",
                "--max-trials",
                "20",
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        calls = dict(server.server.state.calls)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    throughput = re.search(r"throughput: ([\d.]+) infer/sec", run.stdout)
    assert throughput and float(throughput.group(1)) > 0
    protocol_name = "http" if door == "http" else "grpc-stream"
    assert calls.get((protocol_name, "OK"), 0) >= 200, calls  # served through that door
