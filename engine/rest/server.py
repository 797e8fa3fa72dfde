"""The REST door's HTTP server: aiohttp on the event loop grpc.aio runs on, in the same process.

Chosen by measurement (docs/http.md): a closed loop of 16 keep-alive connections posting a
small V2 JSON request to a bare aiohttp handler and to a bare ASGI app on uvicorn with
httptools did the same within the noise of a shared 2-core machine; aiohttp's public
runner API (a socket we bind ourselves, with SO_REUSEPORT so ``--workers N`` share the
port; TLS; a graceful shutdown with a timeout) fits a server that owns its lifecycle, where
uvicorn's ``serve()`` takes over the process's signals.

Every request goes through one middleware: the bearer-token check for the route's level
(before the body is read), then the handler, then — for any exception — the one status
table (``engine.rest.status``). Paths that match no route answer the V2 error body too.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import web

from engine.errors import InvalidRequest, NotFound, Unimplemented
from engine.rest.routes import ROUTES, RestDoor, Route
from engine.rest.status import error_reply
from engine.serving.auth import OPEN

log = logging.getLogger("engine.rest")

_ROUTE_KEY: Final = web.AppKey("route", Route)
SHUTDOWN_S: Final = 1.0


def _error(exc: BaseException) -> web.Response:
    reply = error_reply(exc)
    response = web.Response(body=reply.body, status=reply.code, content_type="application/json")
    for key, value in reply.headers:
        response.headers[key] = value
    return response


def _bind(door: RestDoor, route: Route) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    guard = door.options.guard
    check = guard.check if guard.enabled and route.level != OPEN else None
    handler = route.handler
    level = route.level

    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            if check is not None:  # before the body is read
                check(tuple(request.headers.items()), level)
            response: web.StreamResponse = await handler(door, request)
            return response
        except asyncio.CancelledError:
            raise
        except web.HTTPException as exc:  # aiohttp's own (413 body too large, ...)
            if exc.status == 413:  # the same INVALID_ARGUMENT as gRPC's, with HTTP's own code
                limit = door.options.limits.max_request_bytes
                response = _error(InvalidRequest(f"request body is above the limit of {limit} bytes"))
                response.set_status(413)
                return response
            raise
        except Exception as exc:  # mapped, never leaked: see engine.rest.status
            return _error(exc)

    return handle


@web.middleware
async def _unmatched(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """The V2 error body for paths and methods no route serves."""
    try:
        return await handler(request)
    except web.HTTPNotFound:
        return _error(NotFound(f"no such path: {request.method} {request.path[:200]}"))
    except web.HTTPMethodNotAllowed as exc:
        response = _error(Unimplemented(f"{request.method} is not served on this path"))
        response.set_status(405)
        response.headers["Allow"] = ",".join(sorted(exc.allowed_methods))
        return response


async def _server_header(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Server"] = "graph-engine"  # not aiohttp's, which names Python's and its own versions


def build_app(door: RestDoor) -> web.Application:
    app = web.Application(middlewares=[_unmatched], client_max_size=door.options.limits.max_request_bytes)
    app.on_response_prepare.append(_server_header)
    for route in ROUTES:
        app.router.add_route(route.method, route.path, _bind(door, route))
    return app


class RestServer:
    """Binds, serves and stops the REST door."""

    def __init__(self, door: RestDoor) -> None:
        self.door = door
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self, host: str, port: int, tls: ssl.SSLContext | None = None) -> int:
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # --workers N share the port
        sock.bind((host, port))
        sock.listen(1024)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        runner = web.AppRunner(
            build_app(self.door), access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_S
        )
        await runner.setup()
        await web.SockSite(runner, sock, ssl_context=tls).start()
        self._runner = runner
        return self.port

    async def stop(self, grace: float) -> None:
        """Stop accepting, give open requests ``grace`` seconds, close every connection."""
        if self._runner is None:
            return
        runner, self._runner = self._runner, None
        runner._shutdown_timeout = max(0.0, grace)  # aiohttp reads it in cleanup()
        await runner.cleanup()


def tls_context(cert: str, key: str, client_ca: str) -> ssl.SSLContext:
    """The same certificate, key and (for mutual TLS) client CA the gRPC door serves with."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    if client_ca:
        context.load_verify_locations(client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    context.set_alpn_protocols(["http/1.1"])
    return context
