"""The error -> Status -> gRPC code tables: every row, MRO lookup, and the INTERNAL fallback."""

from __future__ import annotations

import asyncio
import logging
import re

import grpc
import grpc.aio
import pytest

from engine import errors
from engine.protocol.status import GRPC_CODES, StatusReply, abort, status_for
from engine.serving import failure

Code = grpc.StatusCode

ROWS = [
    (errors.InvalidRequest("bad request"), Code.INVALID_ARGUMENT),
    (errors.TensorError("x", "wrong dtype"), Code.INVALID_ARGUMENT),
    (errors.NotFound("no such thing"), Code.NOT_FOUND),
    (errors.GraphNotFound("fraud", "3"), Code.NOT_FOUND),
    (errors.Unavailable("not now"), Code.UNAVAILABLE),
    (errors.GraphUnavailable("loading"), Code.UNAVAILABLE),
    (errors.ServerNotReady("draining"), Code.UNAVAILABLE),
    (errors.DependencyUnavailable("redis down"), Code.UNAVAILABLE),
    (errors.Overloaded("queue full"), Code.RESOURCE_EXHAUSTED),
    (errors.ResourceExhausted("model could not allocate"), Code.RESOURCE_EXHAUSTED),
    (errors.DeadlineExceeded("too slow"), Code.DEADLINE_EXCEEDED),
    (errors.Unauthenticated("who are you"), Code.UNAUTHENTICATED),
    (errors.PermissionDenied("not you"), Code.PERMISSION_DENIED),
    (errors.Unimplemented("no such extension"), Code.UNIMPLEMENTED),
    (errors.FailedPrecondition("not in this state"), Code.FAILED_PRECONDITION),
    (
        errors.GraphInvalid("g", [errors.Diagnostic("g.yaml", 3, 5, "unknown node 'x'")]),
        Code.FAILED_PRECONDITION,
    ),
]


@pytest.mark.parametrize(
    ("exc", "code"), ROWS, ids=lambda v: type(v).__name__ if isinstance(v, Exception) else ""
)
def test_every_row(exc: errors.EngineError, code: grpc.StatusCode) -> None:
    reply = status_for(exc)
    assert isinstance(reply, StatusReply)
    assert reply.code is code
    assert reply.message == str(exc)
    assert reply.error_id is None


def test_every_table_class_has_a_row_here() -> None:
    covered = {type(exc) for exc, _ in ROWS} | {errors.InternalError}
    assert set(errors.STATUS_OF) <= covered


def test_every_status_has_a_grpc_code_of_the_same_name() -> None:
    assert set(GRPC_CODES) == set(errors.Status)
    for engine_status, code in GRPC_CODES.items():
        assert code.name == engine_status.name


def test_lookup_follows_the_mro_of_subclasses() -> None:
    class RedisDown(errors.DependencyUnavailable):
        pass

    class Mixed(KeyError, errors.NotFound):
        def __init__(self) -> None:
            errors.NotFound.__init__(self, "mixed not found")

    assert status_for(RedisDown("redis down")).code is Code.UNAVAILABLE
    assert status_for(Mixed()).code is Code.NOT_FOUND


def test_overloaded_carries_the_retry_pushback_trailer() -> None:
    reply = status_for(errors.Overloaded("queue full", retry_after_ms=250))
    assert reply.code is Code.RESOURCE_EXHAUSTED
    assert reply.trailing_metadata == (("grpc-retry-pushback-ms", "250"),)
    assert status_for(errors.Overloaded("shed")).trailing_metadata == (("grpc-retry-pushback-ms", "100"),)


def test_node_and_tensor_are_named_once() -> None:
    assert status_for(errors.DeadlineExceeded("timed out", node="user")).message == "node 'user': timed out"
    assert status_for(errors.TensorError("x", "bad")).message == "tensor 'x': bad"
    both = errors.InvalidRequest("bad value", node="risk", tensor="amount")
    assert status_for(both).message == "node 'risk', tensor 'amount': bad value"
    already = errors.DependencyUnavailable("node 'user' cannot reach redis", node="user")
    assert status_for(already).message == "node 'user' cannot reach redis"


def test_long_messages_are_clipped() -> None:
    reply = status_for(errors.InvalidRequest("x" * 100_000))
    assert len(reply.message) <= failure.MAX_MESSAGE_CHARS


SECRET = "secret detail /srv/app/engine/thing.py"


@pytest.mark.parametrize(
    "exc",
    [
        RuntimeError(SECRET),
        KeyError(SECRET),
        errors.InternalError(SECRET),
        errors.ModelContractError(SECRET, node="deep"),
    ],
    ids=["RuntimeError", "KeyError", "InternalError", "ModelContractError"],
)
def test_internal_fallback_hides_the_text_and_logs_the_id(
    exc: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    try:
        raise exc  # give it a traceback
    except Exception as raised:
        with caplog.at_level(logging.ERROR, logger="engine.errors"):
            reply = status_for(raised)
    assert reply.code is Code.INTERNAL
    assert "secret" not in reply.message and "/srv" not in reply.message
    match = re.fullmatch(r"internal error(?: in node '(\w+)')? \(id ([0-9a-f]{12})\)", reply.message)
    assert match, reply.message
    assert match.group(1) == getattr(exc, "node", None)
    assert reply.error_id == match.group(2)
    assert reply.trailing_metadata == ()
    records = [r for r in caplog.records if r.name == "engine.errors"]
    assert len(records) == 1
    record = records[0]
    assert reply.error_id in record.getMessage()
    assert SECRET in record.getMessage()
    assert record.exc_info is not None and record.exc_info[1] is exc
    assert "Traceback" in caplog.text


def test_error_ids_differ() -> None:
    ids = {status_for(ValueError("x")).error_id for _ in range(50)}
    assert len(ids) == 50


def test_engine_error_outside_every_row_is_internal() -> None:
    reply = status_for(errors.EngineError("a bare engine error"))
    assert reply.code is Code.INTERNAL
    assert "bare" not in reply.message


@pytest.mark.parametrize("exc", [asyncio.CancelledError(), KeyboardInterrupt(), SystemExit(1)])
def test_cancellation_and_exits_are_re_raised(exc: BaseException) -> None:
    with pytest.raises(type(exc)):
        status_for(exc)


class FakeContext:
    """Records what ``abort`` asks of a grpc.aio ServicerContext."""

    def __init__(self) -> None:
        self.aborted: tuple[grpc.StatusCode, str, tuple[tuple[str, str], ...]] | None = None

    async def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata: tuple = ()) -> None:
        self.aborted = (code, details, tuple(trailing_metadata))
        raise grpc.aio.AbortError()


async def test_abort_sets_code_message_and_trailers() -> None:
    context = FakeContext()
    with pytest.raises(grpc.aio.AbortError):
        await abort(context, errors.Overloaded("concurrency limit", retry_after_ms=40))  # type: ignore[arg-type]
    assert context.aborted == (
        Code.RESOURCE_EXHAUSTED,
        "concurrency limit",
        (("grpc-retry-pushback-ms", "40"),),
    )


async def test_abort_passes_through_abort_error_and_cancellation() -> None:
    context = FakeContext()
    with pytest.raises(grpc.aio.AbortError):
        await abort(context, grpc.aio.AbortError())  # type: ignore[arg-type]
    with pytest.raises(asyncio.CancelledError):
        await abort(context, asyncio.CancelledError())  # type: ignore[arg-type]
    assert context.aborted is None


async def test_abort_over_a_real_server() -> None:
    """The status, message and trailer reach a real client."""

    async def handler(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        if request == b"overload":
            await abort(context, errors.Overloaded("busy", retry_after_ms=75))
        await abort(context, RuntimeError("boom at /secret/path"))

    rpc = grpc.unary_unary_rpc_method_handler(handler)
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("t.T", {"M": rpc}),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary("/t.T/M")
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call(b"overload", timeout=10)
            assert info.value.code() is Code.RESOURCE_EXHAUSTED
            assert info.value.details() == "busy"
            assert ("grpc-retry-pushback-ms", "75") in tuple(info.value.trailing_metadata() or ())
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call(b"other", timeout=10)
            assert info.value.code() is Code.INTERNAL
            assert "secret" not in (info.value.details() or "")
    finally:
        await server.stop(None)
