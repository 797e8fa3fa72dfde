"""One worker of ``engine serve --workers N`` (started by ``engine.fleet.supervisor``).

It connects to the supervisor's socket (``ENGINE_FLEET_SOCKET``), introduces itself as worker
``ENGINE_FLEET_WORKER``, and is welcomed with the server's resolved settings and the graphs
the server has unloaded. It then serves like a single-process server whose control plane is
``FleetLink``: operations on server state go to the supervisor, which runs them on every
worker, this one included (``op`` messages). SIGTERM drains it; so does losing the
supervisor. SIGINT is left to the supervisor (a Ctrl-C reaches the whole process group).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import signal
from collections.abc import Mapping
from typing import Any

from engine.config import ServeSettings
from engine.fleet.channel import Message, answer_from_json, part_to_json, receive, send
from engine.fleet.supervisor import SOCKET_ENV, UVLOOP_ENV, WORKER_ENV
from engine.serving.control import Answer, LocalOperation, run_part

log = logging.getLogger("engine.fleet")


class FleetLink:
    """The control plane of one worker: a broadcast is a request to the supervisor."""

    def __init__(self, index: int, workers: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.index = index
        self._workers = workers
        self._reader = reader
        self._writer = writer
        self._ids = itertools.count(1)
        self._replies: dict[int, asyncio.Future[Answer]] = {}
        self._local: LocalOperation | None = None
        self._tasks: set[asyncio.Future[None]] = set()
        self.closed = asyncio.Event()

    @property
    def workers(self) -> int:
        return self._workers

    async def broadcast(self, op: str, args: Mapping[str, Any], timeout_s: float) -> Answer:
        call_id = next(self._ids)
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._replies[call_id] = future
        try:
            await send(
                self._writer,
                {"type": "request", "id": call_id, "op": op, "args": dict(args), "timeout_s": timeout_s},
            )
            # The supervisor answers within timeout_s (missing workers and all); the margin covers the trip.
            return await asyncio.wait_for(future, timeout_s + 5.0)
        except (TimeoutError, ConnectionError):
            return Answer((), tuple(range(self._workers)))
        finally:
            self._replies.pop(call_id, None)

    async def tell(self, message: Message) -> None:
        with contextlib.suppress(ConnectionError):
            await send(self._writer, message)

    async def serve(self, local: LocalOperation) -> None:
        """Answer the supervisor's ``op`` messages with ``local`` until the channel closes."""
        self._local = local
        try:
            while (message := await receive(self._reader)) is not None:
                kind = message.get("type")
                if kind == "op":
                    task = asyncio.ensure_future(self._run(message))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                elif kind == "reply":
                    future = self._replies.get(int(message["id"]))
                    if future is not None and not future.done():
                        future.set_result(answer_from_json(message["answer"]))
        finally:
            self.closed.set()
            for future in self._replies.values():
                if not future.done():
                    future.set_exception(ConnectionError("supervisor gone"))

    async def _run(self, message: Message) -> None:
        assert self._local is not None
        part = await run_part(self.index, self._local, str(message["op"]), message.get("args") or {})
        await self.tell({"type": "result", "id": message["id"], "part": part_to_json(part)})


async def _main() -> int:
    from engine.server import EngineServer, freeze_startup_heap

    index = int(os.environ[WORKER_ENV])
    reader, writer = await asyncio.open_unix_connection(os.environ[SOCKET_ENV])
    await send(writer, {"type": "hello", "worker": index, "pid": os.getpid()})
    welcome = await receive(reader)
    if welcome is None or welcome.get("type") != "welcome":
        log.error("worker %d: the supervisor did not welcome it", index)
        return 1
    settings = ServeSettings.from_json(welcome["settings"])
    _setup_logging(settings)
    link = FleetLink(index, int(welcome["workers"]), reader, writer)
    server = EngineServer(settings, control=link)
    listening = asyncio.ensure_future(link.serve(server.operations.run))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_stop_signal() -> None:  # the supervisor forwards a second signal: end the drain at once
        if stop.is_set():
            server.abandon()
        stop.set()

    loop.add_signal_handler(signal.SIGTERM, on_stop_signal)
    loop.add_signal_handler(signal.SIGINT, lambda: None)
    loop.add_signal_handler(signal.SIGHUP, server.request_reload)
    await server.start(unloaded=[str(n) for n in welcome.get("unloaded", ())])
    freeze_startup_heap()
    await link.tell({"type": "ready"})
    closed = asyncio.ensure_future(link.closed.wait())
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({closed, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if link.closed.is_set() and not stop.is_set():
        log.error("worker %d: lost the supervisor; stopping", index)
    await server.stop()
    for task in (closed, stopping, listening):
        task.cancel()
    writer.close()
    return 0


def _setup_logging(settings: ServeSettings) -> None:
    from engine.logging_setup import setup_logging

    setup_logging(settings.log_level, settings.log_format)


def main() -> int:
    # The settings (uvloop among them) arrive over the channel; a worker runs on the default loop
    # until then, so the choice is read from the environment the supervisor passed on.
    loop_factory = None
    if os.environ.get(UVLOOP_ENV, "1") == "1":
        with contextlib.suppress(ImportError):
            import uvloop

            loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(_main())


if __name__ == "__main__":
    raise SystemExit(main())
