"""The control plane: how an operation on server state reaches every worker of the server.

``engine serve --workers N`` is one server to its clients, so a reload, load or unload must
change every worker, and statistics, shadow reports and the repository index must answer for
all of them. The core never asks its own repository directly for these: it ``broadcast``s a
named operation and merges the answers (``engine.serving.operations``). One process is the
case N = 1 (``LocalControl``); the workers of one server talk through their supervisor
(``engine.fleet``). Operation names and argument/answer values are plain JSON data.

Operations that change state are applied by every worker in the same order (the supervisor
runs one at a time). A worker that does not answer in time (dead, restarting) is reported in
``Answer.missing``; a restarted worker starts from the graph folders and the server's
recorded state, so it converges without the operation.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from engine.errors import EngineError, FailedPrecondition, InternalError, NotFound, Status
from engine.serving.failure import describe

LocalOperation = Callable[[str, Mapping[str, Any]], Awaitable[Any]]
"""Runs one named operation on this process's state; returns its JSON-able answer."""

MUTATING = frozenset({"reload", "unload"})
"""Operations that change server state (run one at a time, recorded for restarted workers)."""


@dataclass(frozen=True, slots=True)
class Part:
    """One worker's answer: its value, or the failure it reported (status name and message)."""

    worker: int
    value: Any = None
    status: str = Status.OK.value
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status == Status.OK.value

    def raise_failure(self) -> None:
        """Raise this part's failure again on this side, as an ``EngineError`` of its status."""
        if self.ok:
            return
        cls = _RAISED.get(self.status, InternalError)
        raise cls(self.message)


_RAISED: dict[str, type[EngineError]] = {
    Status.NOT_FOUND.value: NotFound,
    Status.FAILED_PRECONDITION.value: FailedPrecondition,
}


@dataclass(frozen=True, slots=True)
class Answer:
    """Every worker's part of one operation, and the workers that did not answer."""

    parts: tuple[Part, ...]
    missing: tuple[int, ...] = field(default=())

    def values(self) -> list[Any]:
        """The values of the parts that succeeded; raises the first failure when none did."""
        good = [p.value for p in self.parts if p.ok]
        if not good:
            for part in self.parts:
                part.raise_failure()
        return good

    def first_failure(self) -> Part | None:
        return next((p for p in self.parts if not p.ok), None)


class ControlPlane(Protocol):
    """Carries operations to every worker of the server (see the module docstring)."""

    @property
    def workers(self) -> int: ...

    async def broadcast(self, op: str, args: Mapping[str, Any], timeout_s: float) -> Answer: ...


async def run_part(worker: int, local: LocalOperation, op: str, args: Mapping[str, Any]) -> Part:
    """Run ``op`` here and wrap its answer (or its failure, as the caller would see it) as a part."""
    try:
        return Part(worker, await local(op, args))
    except Exception as exc:
        failure = describe(exc)
        return Part(worker, None, failure.status.value, failure.message)


class LocalControl:
    """The control plane of a server that is one process."""

    def __init__(self, local: LocalOperation) -> None:
        self._local = local

    @property
    def workers(self) -> int:
        return 1

    async def broadcast(self, op: str, args: Mapping[str, Any], timeout_s: float) -> Answer:
        return Answer((await run_part(0, self._local, op, args),))
