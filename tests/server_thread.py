"""A real EngineServer on an ephemeral loopback port, run on its own event loop thread.

Tests then call it exactly as users do (tritonclient.grpc, the engine CLI, grpc
channels) from the test's thread.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from engine.config import ServeSettings
from engine.server import EngineServer


class ServerThread:
    def __init__(self, graphs: Path, *, span_exporter: Any = None, **settings: Any) -> None:
        self.span_exporter = span_exporter
        self.settings = ServeSettings.from_env(
            environ={},
            graphs=graphs,
            host="127.0.0.1",
            port=0,
            uvloop=False,
            **{"metrics_port": 0, "http_port": 0, **settings},
        )
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="engine-server", daemon=True)
        self.server: EngineServer | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        """``host:port`` of the HTTP/REST door (tritonclient.http's ``url``)."""
        assert self.server is not None
        return f"127.0.0.1:{self.server.http_port}"

    def call(self, coro: Coroutine[Any, Any, Any], timeout: float = 60) -> Any:
        """Run a coroutine on the server's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> ServerThread:
        self.thread.start()

        async def boot() -> int:
            self.server = EngineServer(self.settings, span_exporter=self.span_exporter)
            return await self.server.start()

        self.port = self.call(boot())
        return self

    def stop(self, grace: float = 1.0) -> None:
        """Drain the server and end its loop; a second call does nothing."""
        if not self.thread.is_alive():
            return
        if self.server is not None:
            self.call(self.server.stop(grace))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
