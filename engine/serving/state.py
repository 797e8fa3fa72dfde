"""The process's serving state as every front door sees it: its lifecycle, its calls, admission.

``EngineServer`` moves the lifecycle along (start -> ready; drain: stopping, then draining);
the core checks it before every inference call, counts what it refused and what is in
flight, and admits calls through ``admission``. One object per process, shared by every
front door.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from engine.errors import ServerNotReady
from engine.serving.admission import Admission


@dataclass
class ServingState:
    live: bool = True
    ready: bool = False
    """Set once every graph has been loaded at start."""
    stopping: bool = False
    """Set when a drain begins: health and readiness turn false while calls are still served."""
    draining: bool = False
    """Set after the drain delay: new calls are refused with UNAVAILABLE."""
    in_flight: int = 0
    """Inference calls between decoding and their answer, over every front door."""
    last_arrival: float = 0.0
    """time.monotonic() of the latest inference call, refused ones included (a drain waits for quiet)."""
    unrouted: dict[str, int] = field(default_factory=dict)
    """Calls that named no served graph (unknown, not ready), by status."""
    calls: dict[tuple[str, str], int] = field(default_factory=dict)
    """Every inference call by front door (``InferCall.protocol``) and status."""
    admission: Admission = field(default_factory=Admission)
    """The concurrency limit and wait queue every inference call goes through."""
    drained: asyncio.Event = field(default_factory=asyncio.Event)
    """Set with ``draining``: open streams wake up to end once their messages are answered."""

    @property
    def serving(self) -> bool:
        """What readiness probes answer: started and not stopping."""
        return self.ready and not self.stopping

    def begin_drain(self) -> None:
        """Refuse new calls from now on (``check_ready``) and tell open streams to end."""
        self.draining = True
        self.drained.set()

    def count_call(self, protocol: str, status: str) -> None:
        key = (protocol, status)
        self.calls[key] = self.calls.get(key, 0) + 1

    def count_unrouted(self, status: str) -> None:
        self.unrouted[status] = self.unrouted.get(status, 0) + 1

    def check_ready(self) -> None:
        """Raise ``ServerNotReady`` (UNAVAILABLE) unless inference calls may run now."""
        if self.draining:
            raise ServerNotReady("server is draining")
        if not self.ready:
            raise ServerNotReady("server is starting")
