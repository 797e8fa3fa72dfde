"""``engine serve`` as a real process: health, reflection, graceful drain on SIGTERM/SIGINT,
and ``--workers`` under a supervising parent."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from tritonclient.utils import InferenceServerException

from tests import fraud_example as fraud
from tests.adapters.proxy import stalling_store
from tests.integration.held_graph import held_inputs, held_repository

ROOT = Path(__file__).resolve().parents[2]
SERVING = re.compile(r"\[(\d+)\] serving (\d+) graph\(s\) on ([\d.]+):(\d+)")
TIMEOUT = 60.0  # generous: only there so a broken build fails instead of hanging


# --- a running `engine serve` -------------------------------------------------------------------


class EngineProcess:
    """``python -m engine.cli serve …`` with its stderr collected line by line."""

    def __init__(self, *args: str) -> None:
        # An ephemeral metrics port unless a test names one: servers in tests never collide on 8002.
        env = {"ENGINE_METRICS_PORT": "0", "ENGINE_HTTP_PORT": "0", **os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "serve", *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    def wait_for(
        self, pattern: re.Pattern[str], count: int = 1, timeout: float = TIMEOUT
    ) -> list[re.Match[str]]:
        """The first ``count`` log lines matching ``pattern``, waiting for them to appear."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = [m for m in map(pattern.search, self.lines) if m]
                if len(found) >= count:
                    return found[:count]
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(f"no {count} line(s) matching {pattern.pattern!r} in:\n{self.log}")
                self._changed.wait(min(left, 0.5))

    def serving_port(self) -> int:
        return int(self.wait_for(SERVING)[0].group(4))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(TIMEOUT)
        self._reader.join(TIMEOUT)


@pytest.fixture
def launch() -> Iterator[Callable[..., EngineProcess]]:
    started: list[EngineProcess] = []

    def start(*args: str) -> EngineProcess:
        process = EngineProcess(*args)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


# --- graphs -------------------------------------------------------------------------------------


@pytest.fixture
def quick_graphs(tmp_path: Path, example_graphs: Path) -> Path:
    root = tmp_path / "graphs"
    shutil.copytree(example_graphs / "quickstart", root / "quickstart")
    shutil.copytree(example_graphs / "fraud", root / "fraud")
    # fraud's `users` feature source, as graphs/engine.yaml declares it (paths made absolute)
    (root / "engine.yaml").write_text(yaml.safe_dump({"feature_sources": fraud.feature_sources()}))
    return root


# --- calls --------------------------------------------------------------------------------------


def health(url: str, service: str) -> tuple[str, str]:
    """(status or "", grpc code name) of one grpc.health.v1 Check."""
    with grpc.insecure_channel(url) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        except grpc.RpcError as exc:
            return "", exc.code().name
        return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status), "OK"


def infer_quickstart(url: str, rows: int = 2) -> np.ndarray:
    client = triton.InferenceServerClient(url)
    try:
        x = triton.InferInput("x", [rows, 4], "FP32")
        data = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]] * rows, dtype=np.float32)[:rows]
        x.set_data_from_numpy(data)
        result = client.infer("quickstart", [x], client_timeout=TIMEOUT)
        prob = result.as_numpy("prob")
        assert prob is not None
        return prob
    finally:
        client.close()


def infer_held(url: str) -> np.ndarray:
    client = triton.InferenceServerClient(url)
    try:
        y = client.infer("held", held_inputs(), client_timeout=TIMEOUT).as_numpy("y")
        assert y is not None
        return y
    finally:
        client.close()


def status_of(exc: BaseException) -> str:
    assert isinstance(exc, InferenceServerException), exc
    return str(exc.status()).removeprefix("StatusCode.")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def children_of(parent: int) -> set[int]:
    """Live (non-zombie) processes whose parent is ``parent``, from /proc."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == parent and fields[0] != "Z":
            found.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def eventually(check: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


# --- tests --------------------------------------------------------------------------------------


def test_health_and_reflection(launch: Callable[..., EngineProcess], quick_graphs: Path) -> None:
    engine = launch(str(quick_graphs), "--port", "0", "--host", "127.0.0.1")
    port = engine.serving_port()
    assert engine.wait_for(SERVING)[0].group(2) == "2"
    url = f"127.0.0.1:{port}"

    assert health(url, "") == ("SERVING", "OK")
    assert health(url, "fraud") == ("SERVING", "OK")
    assert health(url, "quickstart") == ("SERVING", "OK")
    assert health(url, "nosuch") == ("", "NOT_FOUND")

    with grpc.insecure_channel(url) as channel:
        services = set(ProtoReflectionDescriptorDatabase(channel).get_services())
    assert {"inference.GRPCInferenceService", "engine.v1.Engine", "grpc.health.v1.Health"} <= services

    client = triton.InferenceServerClient(url)
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready("fraud")
    finally:
        client.close()

    engine.proc.send_signal(signal.SIGTERM)
    assert engine.proc.wait(TIMEOUT) == 0


def _outcome(future: Future[np.ndarray]) -> np.ndarray | str:
    try:
        return future.result(TIMEOUT)
    except InferenceServerException as exc:
        return f"{status_of(exc)}: {exc.message()}"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_drains_in_flight_calls_and_refuses_new_ones(
    launch: Callable[..., EngineProcess], tmp_path: Path, example_graphs: Path, signum: signal.Signals
) -> None:
    # The calls are held in their feature fetch by a stalled proxy until the checks are done.
    with stalling_store(6379) as (proxy, proxy_loop):
        root = tmp_path / "graphs"
        held_repository(root, proxy.port, quickstart=example_graphs / "quickstart")
        engine = launch(str(root), "--port", "0", "--grace", "30", "--pool-threads", "2")
        url = f"127.0.0.1:{engine.serving_port()}"
        assert health(url, "held") == ("SERVING", "OK")
        expected = infer_held(url)  # connected to the store
        np.testing.assert_array_equal(expected, [[1.0], [1.0]])

        proxy_loop.soon(proxy.stall)
        with ThreadPoolExecutor(4) as pool:
            calls = [pool.submit(infer_held, url) for _ in range(4)]
            eventually(lambda: proxy.held > 0, "a call to reach the store")
            time.sleep(0.2)  # the others too, most likely (one that has not is refused, below)
            engine.proc.send_signal(signum)

            # while the in-flight calls wait: health says NOT_SERVING, new calls are refused cleanly
            eventually(lambda: health(url, "") != ("SERVING", "OK"), "health to leave SERVING")
            assert health(url, "") == ("NOT_SERVING", "OK")
            assert health(url, "held") == ("NOT_SERVING", "OK")
            with pytest.raises(InferenceServerException) as refused:
                infer_quickstart(url)
            assert status_of(refused.value) == "UNAVAILABLE"
            assert "draining" in refused.value.message()
            assert not all(f.done() for f in calls)  # the one the store saw is still held
            proxy_loop.soon(proxy.resume)
            outcomes = [_outcome(f) for f in calls]

    assert engine.proc.wait(TIMEOUT) == 0
    engine.stop()
    in_flight = int(engine.wait_for(re.compile(r"draining: (\d+) call\(s\) in flight"))[0].group(1))
    assert in_flight >= 1, engine.log
    assert "stopped" in engine.log
    # every call the server had taken finished, correctly; one that had not yet reached it when
    # the signal came was refused with a retryable UNAVAILABLE, never cut off
    served = [o for o in outcomes if not isinstance(o, str)]
    assert len(served) >= in_flight, outcomes
    for result in served:
        np.testing.assert_array_equal(result, expected)
    for refusal in (o for o in outcomes if isinstance(o, str)):
        assert refusal.startswith("UNAVAILABLE: ") and "draining" in refusal, outcomes
    with pytest.raises(InferenceServerException) as closed:
        infer_quickstart(url)
    assert status_of(closed.value) == "UNAVAILABLE"


def test_drain_delay_keeps_serving_while_health_says_not_serving(
    launch: Callable[..., EngineProcess], quick_graphs: Path
) -> None:
    engine = launch(str(quick_graphs), "--port", "0", "--drain-delay", "2", "--grace", "1")
    url = f"127.0.0.1:{engine.serving_port()}"
    expected = infer_quickstart(url)
    engine.proc.send_signal(signal.SIGTERM)
    eventually(lambda: health(url, "") == ("NOT_SERVING", "OK"), "health NOT_SERVING")
    assert health(url, "fraud") == ("NOT_SERVING", "OK")
    np.testing.assert_array_equal(infer_quickstart(url), expected)  # load balancers catch up

    def refused() -> bool:
        try:
            infer_quickstart(url)
        except InferenceServerException as exc:
            assert status_of(exc) == "UNAVAILABLE", exc
            return True
        return False

    eventually(refused, "new calls to be refused after the drain delay")
    assert engine.proc.wait(TIMEOUT) == 0
    engine.stop()
    assert engine.log.index("NOT_SERVING") < engine.log.index("draining: 0 call(s) in flight")


def test_workers_share_a_port_and_are_restarted(
    launch: Callable[..., EngineProcess], quick_graphs: Path
) -> None:
    port = free_port()
    parent = launch(str(quick_graphs), "--workers", "2", "--port", str(port), "--max-elements", "4")
    first = parent.wait_for(SERVING, count=2)
    workers = {int(m.group(1)) for m in first}
    assert len(workers) == 2 and {int(m.group(4)) for m in first} == {port}
    assert workers == children_of(parent.proc.pid)
    url = f"127.0.0.1:{port}"
    expected = infer_quickstart(url, rows=1)
    for _ in range(6):  # fresh connections, spread over both workers by the kernel
        np.testing.assert_array_equal(infer_quickstart(url, rows=1), expected)
        with pytest.raises(InferenceServerException) as too_big:  # every worker got --max-elements
            infer_quickstart(url, rows=2)
        assert status_of(too_big.value) == "INVALID_ARGUMENT"

    killed = min(workers)
    os.kill(killed, signal.SIGKILL)
    third = parent.wait_for(SERVING, count=3)[2]
    replacement = int(third.group(1))
    assert replacement not in workers
    assert children_of(parent.proc.pid) == (workers - {killed}) | {replacement}
    assert re.search(rf"worker \d \(pid {killed}\) exited with -9; restarting", parent.log), parent.log
    np.testing.assert_array_equal(infer_quickstart(url, rows=1), expected)

    parent.proc.send_signal(signal.SIGTERM)
    assert parent.proc.wait(TIMEOUT) == 0
    survivors = (workers - {killed}) | {replacement}
    eventually(lambda: not any(alive(pid) for pid in survivors), "every worker to exit")
    assert parent.log.count("stopped") >= 2


def test_workers_need_a_fixed_port(launch: Callable[..., EngineProcess], quick_graphs: Path) -> None:
    engine = launch(str(quick_graphs), "--workers", "2", "--port", "0")
    assert engine.proc.wait(TIMEOUT) == 2
    engine.stop()
    assert "--workers > 1 needs a fixed --port" in engine.log


def test_a_stop_during_a_restart_back_off_starts_no_new_worker(
    launch: Callable[..., EngineProcess], quick_graphs: Path
) -> None:
    parent = launch(str(quick_graphs), "--workers", "2", "--port", str(free_port()))
    workers = {int(m.group(1)) for m in parent.wait_for(SERVING, count=2)}
    killed = min(workers)
    os.kill(killed, signal.SIGKILL)
    parent.wait_for(re.compile(rf"\(pid {killed}\) exited with -9; restarting in"))
    parent.proc.send_signal(signal.SIGTERM)  # while the supervisor waits to restart it

    assert parent.proc.wait(TIMEOUT) == 0
    parent.stop()
    assert "restarted as pid" not in parent.log, parent.log
    assert len(SERVING.findall(parent.log)) == 2, parent.log
    assert not alive(max(workers))
