"""Registers servicers with grpc.aio so every RPC gets the same edge treatment.

Each method is registered with a pass-through request deserializer: the bytes
are parsed inside the handler, so a request that does not parse is
INVALID_ARGUMENT with a message, never grpc's default UNKNOWN/INTERNAL. Every
exception a servicer raises goes through the one mapping table in
``engine.protocol.status``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import grpc
from google.protobuf.message import Message

from engine.protocol.codec import CodecLimits, parse_message
from engine.protocol.status import abort
from engine.serving.auth import INFERENCE, OPEN, TokenGuard

Method = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Message]]
StreamMethod = Callable[[AsyncIterator[bytes], grpc.aio.ServicerContext[Any, Any]], AsyncIterator[Message]]
"""A bidirectional stream: the request messages' bytes in (each parsed by the method), messages out."""


def _wrap(
    method: Method, request_type: type[Message], limits: CodecLimits, guard: TokenGuard | None, level: str
) -> Callable[[bytes, grpc.aio.ServicerContext[Any, Any]], Any]:
    check = guard.check if guard is not None and guard.enabled and level != OPEN else None

    async def handle(data: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> Message:
        try:
            if check is not None:  # before the bytes are even parsed
                check(context.invocation_metadata(), level)  # type: ignore[arg-type]  # stubs type it _Metadatum, not tuples
            request = parse_message(request_type, data, limits)
            return await method(request, context)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # mapped, never leaked: see engine.protocol.status
            if isinstance(exc, grpc.aio.AbortError):
                raise
            await abort(context, exc)
            raise  # unreachable: abort raises

    return handle


def _wrap_stream(
    method: StreamMethod, guard: TokenGuard | None, level: str
) -> Callable[[AsyncIterator[bytes], grpc.aio.ServicerContext[Any, Any]], AsyncIterator[Message]]:
    check = guard.check if guard is not None and guard.enabled and level != OPEN else None

    async def handle(
        requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Message]:
        try:
            if check is not None:  # once, before the first message is read
                check(context.invocation_metadata(), level)  # type: ignore[arg-type]  # stubs type it _Metadatum
            async for message in method(requests, context):
                yield message
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the stream itself failed (a message's failure is its own answer)
            if isinstance(exc, grpc.aio.AbortError):
                raise
            await abort(context, exc)

    return handle


def generic_handler(
    service: str,
    methods: dict[str, tuple[Method, type[Message]]],
    limits: CodecLimits,
    guard: TokenGuard | None = None,
    levels: Mapping[str, str] | None = None,
    default_level: str = INFERENCE,
    streams: Mapping[str, StreamMethod] | None = None,
) -> grpc.GenericRpcHandler:
    """A handler for ``service`` whose methods are ``name -> (coroutine, request type)``, and whose
    bidirectional ``streams`` are ``name -> async generator``.

    ``levels`` names the credentials each method needs (``engine.serving.auth``)."""
    levels = levels or {}
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
        name: grpc.unary_unary_rpc_method_handler(
            _wrap(method, request_type, limits, guard, levels.get(name, default_level)),
            request_deserializer=None,
            response_serializer=_serialize,
        )
        for name, (method, request_type) in methods.items()
    }
    for name, stream in (streams or {}).items():
        handlers[name] = grpc.stream_stream_rpc_method_handler(
            _wrap_stream(stream, guard, levels.get(name, default_level)),
            request_deserializer=None,
            response_serializer=_serialize,
        )
    return grpc.method_handlers_generic_handler(service, handlers)


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()
