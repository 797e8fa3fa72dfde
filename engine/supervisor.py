"""``engine serve --workers N``: N server processes sharing one port with SO_REUSEPORT.

The parent only supervises: it starts each worker as ``engine serve … --workers 1``,
restarts a worker that dies unexpectedly (with a back-off that a stop request
cuts short, reset once a worker has stayed up for ``STABLE_S``). It forwards
SIGHUP to every worker (each reloads its graphs), and on SIGTERM/SIGINT forwards
SIGTERM so every worker drains, then waits for them (drain delay + grace + a
margin, after which it kills them) and exits 0.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence

log = logging.getLogger("engine.supervisor")

POLL_S = 0.2
STABLE_S = 10.0
"""A worker that ran this long before dying is restarted without back-off."""


def _backoff(restarts: int) -> float:
    return min(30.0, 0.5 * 2 ** min(restarts, 6))


def supervise(
    worker_argv: Sequence[str] | Callable[[int], Sequence[str]],
    workers: int,
    grace_s: float,
    drain_delay_s: float = 0.0,
) -> int:
    """Run ``workers`` copies of ``python -m engine.cli <worker_argv>`` until signalled.

    ``worker_argv`` may be a function of the worker's index (each worker's own metrics port)."""
    stop = threading.Event()

    def request_stop(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    procs: list[subprocess.Popen[bytes] | None] = []

    def forward_reload(signum: int, frame: object) -> None:
        """SIGHUP: every worker re-reads its graphs (an RPC reload would reach only one of them)."""
        for proc in procs:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGHUP)

    signal.signal(signal.SIGHUP, forward_reload)

    def command(index: int) -> list[str]:
        argv = worker_argv(index) if callable(worker_argv) else worker_argv
        return [sys.executable, "-m", "engine.cli", *argv]

    procs.extend(subprocess.Popen(command(i)) for i in range(workers))
    started = [time.monotonic()] * workers
    restarts = [0] * workers
    restart_at: list[float | None] = [None] * workers
    log.info("started %d workers: %s", workers, " ".join(str(p.pid) for p in procs if p is not None))
    while not stop.wait(POLL_S):
        now = time.monotonic()
        for i, proc in enumerate(procs):
            if proc is not None and proc.poll() is not None:
                if now - started[i] >= STABLE_S:
                    restarts[i] = 0
                wait = _backoff(restarts[i])
                log.error(
                    "worker %d (pid %d) exited with %s; restarting in %.1fs",
                    i,
                    proc.pid,
                    proc.returncode,
                    wait,
                )
                procs[i], restart_at[i] = None, now + wait
            due = restart_at[i]
            if procs[i] is None and due is not None and now >= due:
                restarts[i] += 1
                procs[i], restart_at[i], started[i] = subprocess.Popen(command(i)), None, now
                log.info("worker %d restarted as pid %d", i, procs[i].pid)  # type: ignore[union-attr]
    running = [p for p in procs if p is not None and p.poll() is None]
    log.info("stopping %d worker(s)", len(running))
    for proc in running:
        proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + drain_delay_s + grace_s + 5
    for proc in running:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.error("worker pid %d did not stop within the grace period; killing it", proc.pid)
            proc.kill()
            proc.wait()
    return 0
