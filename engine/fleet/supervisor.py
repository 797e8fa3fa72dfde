"""``engine serve --workers N``: N worker processes that are one server.

The workers share the gRPC port (SO_REUSEPORT), so a client's connection lands on any of
them. Everything that changes or reports server state goes through this supervisor: a
worker that gets a reload, load or unload (or a statistics, index or shadow report call)
sends the operation here as a ``request``; the supervisor runs it on every worker (``op``
→ ``result``) and sends all their parts back as the ``reply``, which the worker merges
(``engine.serving.operations``) into the answer one process would give.

* Operations that change state run one at a time, on every worker, in the same order.
  After a reload the workers' graph fingerprints are compared; if a folder changed while
  they read it they are told to reload again, until they agree (at most ``RELOAD_ROUNDS``).
* Unloads are recorded: a worker that starts (or restarts) is told which graphs the server
  has unloaded, so it does not serve them. Loading the graph by name clears it (re-reading
  everything keeps unloaded graphs unloaded, as on one process).
* SIGHUP and ``reload_interval_s`` reload the whole fleet (never one worker on its own).
* A worker that dies is restarted with a back-off (reset once it stayed up ``STABLE_S``);
  once it serves (or once a worker that missed a change while loading serves), the fleet
  re-reads the folders together and the recorded unloads are applied again, so every worker
  serves the same versions.
* SIGTERM/SIGINT: every worker gets SIGTERM and drains; any still running after the drain
  delay + grace + ``STOP_MARGIN_S`` is killed.
* Metrics: each worker serves its own on a loopback port; the configured port serves all of
  them with a ``worker`` label (``engine.observability.merged_metrics``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import json
import logging
import os
import signal
import socket
import sys
import tempfile
from collections.abc import Coroutine, Mapping
from pathlib import Path
from typing import Any

from engine.config import ServeSettings
from engine.fleet.channel import Message, answer_to_json, part_from_json, receive, send
from engine.fleet.malloc import with_huge_pages
from engine.serving.control import MUTATING, Answer, Part

log = logging.getLogger("engine.fleet")

SOCKET_ENV = "ENGINE_FLEET_SOCKET"
WORKER_ENV = "ENGINE_FLEET_WORKER"
UVLOOP_ENV = "ENGINE_FLEET_UVLOOP"
STABLE_S = 10.0
"""A worker that ran this long before dying is restarted without back-off."""
RELOAD_ROUNDS = 3
STOP_MARGIN_S = 5.0
RELOAD_TIMEOUT_S = 600.0


def backoff(restarts: int) -> float:
    """Seconds to wait before restarting a worker that died ``restarts`` times in a row."""
    return min(30.0, 0.5 * 2.0 ** min(restarts, 6))


@dataclasses.dataclass(eq=False)
class _Worker:
    index: int
    process: asyncio.subprocess.Process | None = None
    writer: asyncio.StreamWriter | None = None
    ready: bool = False
    restarts: int = 0
    started_at: float = 0.0
    changes_seen: int = 0  # the supervisor's ``changes`` when this worker was welcomed
    pending: dict[int, asyncio.Future[Part]] = dataclasses.field(default_factory=dict)

    def detach(self) -> None:
        """The worker is gone: its channel closes and what it owed is never coming."""
        self.ready = False
        if self.writer is not None:
            self.writer.close()
        self.writer = None
        for future in self.pending.values():
            if not future.done():
                future.cancel()
        self.pending.clear()


class Supervisor:
    def __init__(self, settings: ServeSettings, socket_path: Path) -> None:
        self.settings = settings
        self.socket_path = socket_path
        self.workers = [_Worker(i) for i in range(settings.workers)]
        self.metrics_ports = _loopback_ports(settings.workers) if settings.metrics_port >= 0 else []
        if settings.http_port == 0:  # the workers share one HTTP port: pick it once, for all of them
            host = settings.http_host or settings.host
            settings = self.settings = dataclasses.replace(settings, http_port=_free_port(host))
        self.unloaded: set[str] = set()
        self.changes = 0  # mutating operations run so far: a worker welcomed before one missed it
        self._ids = itertools.count(1)
        self._mutating = asyncio.Lock()
        self._stop = asyncio.Event()
        self._tasks: set[asyncio.Future[Any]] = set()
        self._reloading: asyncio.Future[Any] | None = None

    # -- the fleet's life ------------------------------------------------------------------
    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_stop_signal)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        channel = await asyncio.start_unix_server(self._accept, path=str(self.socket_path))
        if self.metrics_ports:
            from engine.observability.merged_metrics import serve_merged

            host = self.settings.metrics_host or self.settings.host
            port = serve_merged(host, self.settings.metrics_port, self.metrics_ports)
            log.info("metrics of all workers on http://%s:%d/metrics", host, port)
        for worker in self.workers:
            await self._spawn(worker)
        log.info(
            "started %d workers: %s",
            len(self.workers),
            " ".join(str(w.process.pid) for w in self.workers if w.process is not None),
        )
        watcher = (
            self._spawn_task(self._watch(self.settings.reload_interval_s))
            if self.settings.reload_interval_s > 0
            else None
        )
        await self._stop.wait()
        if watcher is not None:
            watcher.cancel()
        await self._stop_workers()
        channel.close()
        for task in list(self._tasks):
            task.cancel()
        return 0

    def _on_stop_signal(self) -> None:
        """The first SIGTERM/SIGINT drains the fleet; a second one is passed on to every worker,
        which then ends its drain at once."""
        if not self._stop.is_set():
            self._stop.set()
            return
        log.warning("second stop signal: the workers end their drains now")
        for worker in self.workers:
            if worker.process is not None and worker.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.process.send_signal(signal.SIGTERM)

    async def _spawn(self, worker: _Worker) -> None:
        env = with_huge_pages(  # so freeing a replaced model's weights does not hold the loop
            {
                **os.environ,
                SOCKET_ENV: str(self.socket_path),
                WORKER_ENV: str(worker.index),
                UVLOOP_ENV: "1" if self.settings.uvloop else "0",
            }
        )
        worker.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "engine.fleet.worker", env=env
        )
        worker.started_at = asyncio.get_running_loop().time()
        self._spawn_task(self._watch_process(worker, worker.process))

    async def _watch_process(self, worker: _Worker, process: asyncio.subprocess.Process) -> None:
        code = await process.wait()
        if self._stop.is_set() or worker.process is not process:
            return
        worker.detach()
        worker.process = None
        loop = asyncio.get_running_loop()
        if loop.time() - worker.started_at >= STABLE_S:
            worker.restarts = 0
        wait = backoff(worker.restarts)
        log.error(
            "worker %d (pid %d) exited with %s; restarting in %.1fs", worker.index, process.pid, code, wait
        )
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stop.wait(), wait)  # a stop request cuts the back-off short
        if self._stop.is_set():
            return
        worker.restarts += 1
        await self._spawn(worker)
        log.info("worker %d restarted as pid %d", worker.index, worker.process.pid if worker.process else -1)

    async def _stop_workers(self) -> None:
        running = [w.process for w in self.workers if w.process is not None and w.process.returncode is None]
        log.info("stopping %d worker(s)", len(running))
        for process in running:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        limit = self.settings.drain_delay_s + self.settings.grace_s + STOP_MARGIN_S
        for process in running:
            try:
                await asyncio.wait_for(process.wait(), max(0.1, limit))
            except TimeoutError:
                log.error("worker pid %d did not stop within the grace period; killing it", process.pid)
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()

    def _spawn_task(self, work: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- the channel ---------------------------------------------------------------------------
    def worker_settings(self, index: int) -> ServeSettings:
        """What one worker runs with: the server's settings as one process of it."""
        return dataclasses.replace(
            self.settings,
            workers=1,
            reload_interval_s=0.0,  # the supervisor reloads the fleet as a whole
            metrics_host="127.0.0.1",
            metrics_port=self.metrics_ports[index] if self.metrics_ports else -1,
        )

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        hello = await receive(reader)
        if hello is None or hello.get("type") != "hello":
            writer.close()
            return
        index = int(hello["worker"])
        if not 0 <= index < len(self.workers):
            writer.close()
            return
        worker = self.workers[index]
        worker.detach()
        worker.writer = writer
        worker.changes_seen = self.changes
        await send(
            writer,
            {
                "type": "welcome",
                "workers": len(self.workers),
                "settings": self.worker_settings(index).to_json(),
                "unloaded": sorted(self.unloaded),
            },
        )
        try:
            while (message := await receive(reader)) is not None:
                self._handle(worker, message)
        finally:
            if worker.writer is writer:
                worker.detach()

    def _handle(self, worker: _Worker, message: Message) -> None:
        kind = message.get("type")
        if kind == "ready":
            worker.ready = True
            log.info("worker %d serving", worker.index)
            # A restarted worker read the folders afresh, and one that was loading missed what
            # changed meanwhile: the fleet reads them again together, and unloads stay unloaded.
            if worker.restarts or worker.changes_seen != self.changes:
                self._spawn_task(self._catch_up())
        elif kind == "result":
            future = worker.pending.pop(int(message["id"]), None)
            if future is not None and not future.done():
                future.set_result(part_from_json(message["part"]))
        elif kind == "request":
            self._spawn_task(self._serve_request(worker, message))
        else:
            log.warning("worker %d sent an unknown message %r", worker.index, kind)

    async def _serve_request(self, worker: _Worker, message: Message) -> None:
        answer = await self.broadcast(
            str(message["op"]), message.get("args") or {}, float(message["timeout_s"])
        )
        if worker.writer is not None:
            with contextlib.suppress(ConnectionError):
                await send(
                    worker.writer, {"type": "reply", "id": message["id"], "answer": answer_to_json(answer)}
                )

    # -- operations ------------------------------------------------------------------------------
    async def broadcast(self, op: str, args: Mapping[str, Any], timeout_s: float) -> Answer:
        """Run ``op`` on every serving worker; those that do not answer in time are ``missing``."""
        if op not in MUTATING:
            return await self._everywhere(op, args, timeout_s)
        async with self._mutating:
            answer = await self._everywhere(op, args, timeout_s)
            if op == "unload" and any(p.ok for p in answer.parts):
                self.unloaded.add(str(args["name"]))
            elif op == "reload":
                self.unloaded -= {str(n) for n in args.get("names", ())}  # naming a graph loads it
                answer = await self._until_agreed(args, timeout_s, answer)
            self.changes += 1
            return answer

    async def _until_agreed(self, args: Mapping[str, Any], timeout_s: float, answer: Answer) -> Answer:
        for _ in range(RELOAD_ROUNDS - 1):
            prints = {_canonical(p.value.get("fingerprints")) for p in answer.parts if p.ok and p.value}
            if len(prints) <= 1:
                return answer
            log.warning("workers read different graph files during a reload; reloading again")
            again = await self._everywhere("reload", args, timeout_s)
            answer = Answer(_merge_rounds(answer.parts, again.parts), again.missing)
        return answer

    async def _everywhere(self, op: str, args: Mapping[str, Any], timeout_s: float) -> Answer:
        targets = [w for w in self.workers if w.ready and w.writer is not None]
        missing = [w.index for w in self.workers if w not in targets]
        futures: dict[int, asyncio.Future[Part]] = {}
        loop = asyncio.get_running_loop()
        for worker in targets:
            call_id = next(self._ids)
            future: asyncio.Future[Part] = loop.create_future()
            worker.pending[call_id] = future
            futures[worker.index] = future
            assert worker.writer is not None
            try:
                await send(worker.writer, {"type": "op", "id": call_id, "op": op, "args": dict(args)})
            except ConnectionError:
                worker.pending.pop(call_id, None)
                future.cancel()
        if futures:
            await asyncio.wait(futures.values(), timeout=timeout_s)
        parts = []
        for index, future in futures.items():
            if future.done() and not future.cancelled():
                parts.append(future.result())
            else:
                future.cancel()
                missing.append(index)
        return Answer(tuple(parts), tuple(sorted(missing)))

    def request_reload(self, *, polled: bool = False) -> None:
        """Reload every worker soon (SIGHUP, the reload interval, a restarted worker); never raises.
        ``polled`` (the reload interval): folders still being written wait, rejected files are not
        re-read until they change."""
        if self._stop.is_set() or (self._reloading is not None and not self._reloading.done()):
            return
        self._reloading = self._spawn_task(self._reload(polled))

    async def _catch_up(self) -> None:
        await self._reload()
        for name in sorted(self.unloaded):
            await self.broadcast("unload", {"name": name}, RELOAD_TIMEOUT_S)

    async def _reload(self, polled: bool = False) -> None:
        try:
            answer = await self.broadcast("reload", {"names": [], "automatic": polled}, RELOAD_TIMEOUT_S)
        except Exception:  # a reload must never take the supervisor down
            log.exception("fleet reload failed")
            return
        for part in answer.parts:
            if not part.ok:
                log.error("worker %d could not reload: %s", part.worker, part.message)
                continue
            for result in part.value["results"]:
                if result["action"] == "failed":
                    log.error(
                        "worker %d: graph %s rejected: %s", part.worker, result["name"], result["error"]
                    )

    async def _watch(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            self.request_reload(polled=True)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _merge_rounds(first: tuple[Part, ...], later: tuple[Part, ...]) -> tuple[Part, ...]:
    """The later round's parts, remembering which versions the first round loaded."""
    loaded = {
        (p.worker, r["name"], r["version"])
        for p in first
        if p.ok
        for r in p.value["results"]
        if r["action"] == "loaded"
    }
    merged = []
    for part in later:
        if not part.ok:
            merged.append(part)
            continue
        results = [
            {**r, "action": "loaded"}
            if r["action"] == "unchanged" and (part.worker, r["name"], r["version"]) in loaded
            else r
            for r in part.value["results"]
        ]
        merged.append(dataclasses.replace(part, value={**part.value, "results": results}))
    return tuple(merged)


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def _loopback_ports(count: int) -> list[int]:
    """Free loopback ports for the workers' own metrics (the supervisor serves the merged ones)."""
    ports = []
    for _ in range(count):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            ports.append(probe.getsockname()[1])
    return ports


def run_supervisor(settings: ServeSettings) -> int:
    """Run the fleet until SIGTERM/SIGINT; returns the exit code."""
    with tempfile.TemporaryDirectory(prefix="engine-fleet-") as folder:
        supervisor = Supervisor(settings, Path(folder) / "control.sock")
        return asyncio.run(supervisor.run())
