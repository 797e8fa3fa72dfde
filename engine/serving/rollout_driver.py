"""``RolloutDriver``: the one loop that judges every running rollout and moves it.

It runs in one process of the server (the only process, or worker 0 of ``--workers``): every
``interval_s`` while a rollout runs it gathers the current step's numbers from every worker
(the ``rollout`` operation's ``counts``), merges them (``merge_counts``), lets ``decide`` judge
them, and carries a transition to every worker (``apply``), so every worker routes alike.
A failure here is logged and retried on the next tick; it never touches a request.
"""

from __future__ import annotations

import asyncio
import logging
import time

from engine.serving.control import ControlPlane
from engine.serving.rollout import RUNNING, Rollouts
from engine.serving.rollout_gates import decide, merge_counts, transition

log = logging.getLogger("engine.rollout")

INTERVAL_S = 0.1
TIMEOUT_S = 10.0


class RolloutDriver:
    def __init__(self, rollouts: Rollouts, control: ControlPlane, interval_s: float = INTERVAL_S) -> None:
        self.rollouts = rollouts
        self.control = control
        self.interval_s = interval_s

    async def run(self) -> None:
        """Judge the running rollouts until cancelled."""
        while True:
            await asyncio.sleep(self.interval_s)
            if not self.rollouts.active:
                continue
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:  # retried next tick; requests never wait on this loop
                log.exception("rollout evaluation failed")

    async def tick(self) -> None:
        answer = await self.control.broadcast("rollout", {"action": "counts"}, TIMEOUT_S)
        for graph, numbers in merge_counts(answer.values(), self.rollouts.windows()).items():
            rollout = self.rollouts.rollouts.get(graph)
            if (
                rollout is None
                or rollout.status != RUNNING
                or (rollout.candidate.version, rollout.step) != (numbers.candidate, numbers.step)
            ):
                continue
            elapsed = time.monotonic() - rollout.step_started
            decision = decide(rollout.spec, rollout.step, numbers, elapsed)
            if decision is not None:
                await self.control.broadcast(
                    "rollout", {"action": "apply", **transition(rollout, decision)}, TIMEOUT_S
                )
