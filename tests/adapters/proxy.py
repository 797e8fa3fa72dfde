"""A TCP proxy of ours for fault injection: forwards to a real server until told to stall."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any


class StallingProxy:
    """Listens on 127.0.0.1:<port>, forwards every connection to ``upstream``.

    ``stall()`` stops forwarding in both directions (bytes are held, connections stay
    open, as with a hung server); ``resume()`` forwards again, held bytes included.
    """

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.port = 0
        self.held = 0  # chunks that arrived while stalled (each waited for ``resume``)
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> StallingProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stall(self) -> None:
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        pumps = [
            asyncio.create_task(self._pump(reader, up_writer)),
            asyncio.create_task(self._pump(up_reader, writer)),
        ]
        self._tasks.update(pumps)
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for task in pumps:
            task.cancel()
            self._tasks.discard(task)
        for w in (writer, up_writer):
            w.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                if not self._flowing.is_set():
                    self.held += 1
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()

    async def close(self) -> None:
        pumps = list(self._tasks)
        for task in pumps:
            task.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)
        for _ in range(3):  # let each connection's handler see its pumps end and close its sockets
            await asyncio.sleep(0)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


class LoopThread:
    """An event loop on a thread of its own, to run the stalling proxy beside the server."""

    def __enter__(self) -> LoopThread:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        return self

    def call(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def soon(self, fn: Callable[[], None]) -> None:
        self.loop.call_soon_threadsafe(fn)

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@contextlib.contextmanager
def stalling_store(port: int) -> Iterator[tuple[StallingProxy, LoopThread]]:
    """A started ``StallingProxy`` in front of 127.0.0.1:``port``, on a loop thread of its own;
    closed on exit. Stall and resume it from another thread with ``loop.soon(proxy.stall)``."""
    proxy = StallingProxy("127.0.0.1", port)
    with LoopThread() as loop:
        loop.call(proxy.start())
        try:
            yield proxy, loop
        finally:
            loop.call(proxy.close())
