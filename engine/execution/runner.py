"""Runs a compiled ``Plan`` for one request.

``PlanRunner`` is built once per graph version; it decides, once, how each
stage is scheduled: steps that finish synchronously (transforms, combines,
models measured fast enough to run inline) run in place with no task; steps
that wait on something (a model in the thread pool) run concurrently in an
``asyncio.TaskGroup`` when a stage has more than one of them, so a failing
node cancels its siblings. Per request the runner only moves arrays between
slots.

Deadlines are absolute ``time.monotonic()`` seconds. No node starts after the
deadline has passed; a node's own ``timeout`` is bounded by what is left of it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np

from engine.errors import DeadlineExceeded, EngineError, InternalError, InvalidRequest
from engine.execution.contracts import enforce
from engine.execution.features import fetch_features
from engine.execution.stats import GraphStats, NodeStats
from engine.graph.values.contracts import Violation
from engine.graph.values.plan import (
    Branch,
    DefaultFill,
    Fallback,
    FeatureStep,
    FunctionStep,
    ModelStep,
    Plan,
    RouteStep,
    Step,
)
from engine.interfaces import ModelRun, NodeEvent, Observer
from engine.shadow.dispatch import ModelCandidate, ShadowBinding, ShadowDispatcher
from engine.shadow.outcome import RequestShadows
from engine.shadow.runner import LiveResult

Values = list[np.ndarray | None]


@dataclass(frozen=True, slots=True)
class _Stage:
    inline: tuple[Step, ...]  # run one after another, in place
    waiting: tuple[Step, ...]  # may wait on a thread or I/O: concurrent when more than one


def _waits(step: Step) -> bool:
    """Whether a step can suspend for long (so siblings are worth running concurrently)."""
    if isinstance(step, FunctionStep):
        return False
    if isinstance(step, ModelStep):
        return step.runtime.traits.inline_max_rows <= 0
    if isinstance(step, FeatureStep):
        return True
    return any(_waits(s) for branch in step.branches for s in branch.steps)


class PlanRunner:
    def __init__(
        self,
        plan: Plan,
        stats: GraphStats | None = None,
        *,
        shadows: ShadowDispatcher | None = None,
        stores: bool = True,
    ) -> None:
        """``shadows`` starts the plan's shadow nodes (None: they are compiled but never run, as
        in the warm-up). ``stores=False`` (the load-time warm-up): features nodes answer with
        their fields' defaults, status ``missing``, instead of querying their stores, so a store
        that is slow or down does not decide whether a graph version may serve."""
        self.plan = plan
        self._stores = stores
        self.stats = stats or GraphStats(plan.graph, plan.version)
        self._stages = tuple(
            _Stage(
                inline=tuple(s for s in stage if not _waits(s)),
                waiting=tuple(s for s in stage if _waits(s)),
            )
            for stage in plan.stages
        )
        self._node_stats: dict[str, NodeStats] = {}
        for step in _all_steps(plan):
            self._node_stats[step.name] = self.stats.node(step.name, step.kind)
        self._n_inputs = len(plan.inputs)
        self._has_optional = any(step.optional for step in _all_steps(plan))
        # Largest batch each model runs inline, as its runtime declares (0: always awaited).
        self._inline_rows: dict[str, int] = {
            step.name: step.runtime.traits.inline_max_rows
            for step in _all_steps(plan)
            if isinstance(step, ModelStep)
        }
        # Each model step's shadows, bound once to their comparisons (none without a dispatcher).
        self._dispatcher = shadows
        self._shadows: dict[str, tuple[ShadowBinding, ...]] = {}
        if shadows is not None:
            for step in _all_steps(plan):
                if isinstance(step, ModelStep) and step.shadows:
                    self._shadows[step.name] = tuple(
                        shadows.bind(s.config, ModelCandidate(s.runtime, s.output_names))
                        for s in step.shadows
                    )

    @property
    def has_contracts(self) -> bool:
        """Whether a features node checks its fields' data contracts (flags go in ``run(flags=)``)."""
        return any(isinstance(s, FeatureStep) and s.contracts for s in _all_steps(self.plan))

    @property
    def has_splits(self) -> bool:
        """Whether a ``split`` assigns rows to arms (``run(arms=)`` reports which)."""
        return any(isinstance(s, RouteStep) and s.kind == "split" for s in _all_steps(self.plan))

    @property
    def has_shadows(self) -> bool:
        """Whether requests may start shadow work (callers then pass a ``RequestShadows``)."""
        return bool(self._shadows)

    async def run(
        self,
        inputs: Sequence[np.ndarray],
        *,
        deadline: float | None = None,
        observer: Observer | None = None,
        request_id: str = "",
        shadows: RequestShadows | None = None,
        flags: list[Violation] | None = None,
        tap: Callable[[Sequence[np.ndarray | None]], None] | None = None,
        arms: dict[str, tuple[np.ndarray, tuple[str, ...]]] | None = None,
    ) -> tuple[np.ndarray, ...]:
        """Run the plan; ``inputs`` are in ``plan.inputs`` order. Returns ``plan.outputs`` in order.

        ``request_id`` decides shadow sampling by id (when the pool samples so); ``shadows``
        collects this request's shadow outcomes for its request-log record; ``flags`` the
        ``flag`` contract violations of its features nodes. ``tap`` (monitoring) is handed every
        slot once the plan has run (no copy: it must not change them); ``arms`` receives each split's
        per-row branch index and branch labels (live quality per arm)."""
        plan = self.plan
        values: Values = [None] * plan.n_slots
        values[: self._n_inputs] = inputs
        rows = _batch_rows(plan, values)
        call = _Call(self, deadline, observer, rows, request_id, shadows, flags, arms)
        run_step = call.step if self._shadows else call._step  # no node has shadows: one frame less
        for stage in self._stages:
            for step in stage.inline:
                await run_step(step, values)
            if len(stage.waiting) == 1:
                await run_step(stage.waiting[0], values)
            elif stage.waiting:
                await call.concurrently(stage.waiting, values)
        if tap is not None:
            tap(values)
        return tuple(values[slot] for slot in plan.output_slots)  # type: ignore[misc]  # all filled by now


class _Call:
    """The state of one request's walk over a plan."""

    __slots__ = ("arms", "deadline", "flags", "observer", "request_id", "rows", "runner", "shadows", "t0")

    def __init__(
        self,
        runner: PlanRunner,
        deadline: float | None,
        observer: Observer | None,
        rows: int,
        request_id: str = "",
        shadows: RequestShadows | None = None,
        flags: list[Violation] | None = None,
        arms: dict[str, tuple[np.ndarray, tuple[str, ...]]] | None = None,
    ):
        self.runner = runner
        self.flags = flags
        self.arms = arms
        self.deadline = deadline
        self.observer = observer
        self.rows = rows
        self.request_id = request_id
        self.shadows = shadows
        self.t0 = time.perf_counter_ns()

    async def concurrently(self, steps: Sequence[Step], values: Values) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                for step in steps:
                    group.create_task(self.step(step, values))
        except BaseExceptionGroup as group_error:
            raise _first_error(group_error) from None

    async def step(self, step: Step, values: Values) -> None:
        bindings = self.runner._shadows.get(step.name) if self.runner._shadows else None
        if bindings:
            await self._mirrored(step, bindings, values)  # type: ignore[arg-type]  # only model steps have shadows
        else:
            await self._step(step, values)

    async def _mirrored(self, step: ModelStep, bindings: tuple[ShadowBinding, ...], values: Values) -> None:
        """Run a model step that has shadows: they start now, on the same input arrays, and are
        compared with its outputs once known (``None``: it failed or was recovered)."""
        args: list[np.ndarray] = [values[i] for i in step.inputs]  # type: ignore[misc]  # a shadow mirrors inputs as they are
        dispatcher = self.runner._dispatcher
        assert dispatcher is not None
        live = dispatcher.launch(bindings, args, request_id=self.request_id, results=self.shadows)
        start = time.perf_counter_ns()
        result: LiveResult | None = None
        try:
            if not await self._step(step, values):
                outputs = {
                    name: values[slot] for name, slot in zip(step.output_names, step.outputs, strict=True)
                }
                result = LiveResult(outputs, time.perf_counter_ns() - start)  # type: ignore[arg-type]  # the step ran: set
        finally:
            if not live.done():
                live.set_result(result)

    async def _step(self, step: Step, values: Values) -> bool:
        """Run one step into ``values``; True when its on_error action produced the outputs."""
        deadline = self.deadline
        if deadline is not None and time.monotonic() >= deadline:
            raise DeadlineExceeded(
                f"request deadline passed before node '{step.name}' started", node=step.name
            )
        start = time.perf_counter_ns()
        args = [values[i] for i in step.inputs]
        if self.runner._has_optional and _needs_absent(step, args, values):
            self._skip(step, start)
            return True
        branch_rows: dict[str, int] | None = None
        queue_ns = 0
        batch_rows = 0  # rows of the batch a batching model ran these rows in
        counts_batch = False  # and whether this request counts that batch
        recovered = False
        statuses: np.ndarray | None = None
        present = cast(list[np.ndarray], args)  # every input is there: _needs_absent said so
        try:
            if isinstance(step, FunctionStep):
                outs = step.fn(present)
            elif isinstance(step, ModelStep):
                limit = self.runner._inline_rows.get(step.name, 0)  # _inline, written out: every call
                first = present[0] if present else None
                if limit > 0 and (first is None or not first.ndim or first.shape[0] <= limit):
                    # finishes without suspending: a timer could not stop it
                    outs = step.runtime.run_inline(present)
                else:
                    run = await self._bounded_run(step, present)
                    outs = run.outputs
                    queue_ns, batch_rows, counts_batch = run.queue_ns, run.batch_rows, run.counts_batch
            elif isinstance(step, FeatureStep):
                outs, statuses = await fetch_features(
                    step,
                    present[0],
                    deadline,
                    store=self.runner._stores,
                )
                if step.contracts:
                    enforce([(c, outs[k]) for k, c in step.contracts], self.runner.stats, self.flags)
            else:
                outs, branch_rows = await self._route(step, present, values)
        except EngineError as exc:
            if step.recovery is not None and self._recoverable(exc):
                outs, recovered = await self._recover(step, start, exc, values), True
            elif step.optional and self._recoverable(exc):
                self._fail(step, start, exc, recovered="optional, outputs left out")
                return True
            else:
                self._fail(step, start, exc)
                raise _attribute(exc, step.name) from None
        except (TimeoutError, asyncio.CancelledError):
            self._fail(step, start, None)
            raise
        except Exception as exc:
            if step.optional and step.recovery is None:
                self._fail(step, start, exc, recovered="optional, outputs left out")
                return True
            if step.recovery is None:
                self._fail(step, start, exc)
                raise InternalError(
                    f"node '{step.name}' failed: {type(exc).__name__}", node=step.name
                ) from exc
            outs, recovered = await self._recover(step, start, exc, values), True
        for slot, array in zip(step.outputs, outs, strict=True):
            values[slot] = array
        if recovered:  # counted (and observed) as a failure that its on_error action covered
            return True
        duration = time.perf_counter_ns() - start
        rows = int(args[0].shape[0]) if args and args[0] is not None and args[0].ndim else self.rows
        stats = self.runner._node_stats[step.name]
        stats.record(True, duration, rows, queue_ns)
        if counts_batch:
            stats.count_batch(batch_rows)
        if statuses is not None:
            stats.count_features(statuses)
        if self.observer is not None:
            self._observe(
                step, start, duration, rows, args, outs, branch_rows, None, queue_ns, statuses, batch_rows
            )
        return False

    def _skip(self, step: Step, start: int) -> None:
        """``step`` needs an output an optional node could not give: it does not run (not a failure)."""
        if self.observer is not None:
            error = "skipped: an input comes from an optional node that failed"
            self._observe(step, start, 0, 0, [], (), None, error)

    def _recoverable(self, exc: EngineError) -> bool:
        """A node's own failure can be recovered; a request that is out of time cannot."""
        return not (
            isinstance(exc, DeadlineExceeded)
            and self.deadline is not None
            and time.monotonic() >= self.deadline
        )

    async def _recover(
        self, step: Step, start: int, exc: BaseException, values: Values
    ) -> tuple[np.ndarray, ...]:
        """Run ``step``'s on_error action; counts the failure and says which action fired."""
        recovery = step.recovery
        self._fail(step, start, exc, recovered="default" if isinstance(recovery, DefaultFill) else "fallback")
        if isinstance(recovery, DefaultFill):
            return tuple(
                np.full((self.rows, *spec.shape[1:]), recovery.value, dtype=spec.datatype.numpy_dtype)
                for spec in recovery.outputs
            )
        assert isinstance(recovery, Fallback)
        for inner in recovery.steps:
            await self.step(inner, values)  # a failing fallback fails the request, naming itself
        return tuple(values[slot] for slot in recovery.results)  # type: ignore[misc]  # the recovery filled them

    def _inline(self, step: ModelStep, args: list[np.ndarray]) -> bool:
        """Whether the runtime will run this batch synchronously on the event loop."""
        limit = self.runner._inline_rows.get(step.name, 0)
        if limit <= 0:
            return False
        first = args[0] if args else None
        rows = int(first.shape[0]) if first is not None and first.ndim else 1
        return rows <= limit

    async def _bounded_run(self, step: ModelStep, args: list[np.ndarray]) -> ModelRun:
        """Run ``step``'s model within the node's timeout and the request's deadline."""
        budget = step.timeout_s
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            budget = left if budget is None else min(budget, left)
        if budget is None:
            return await step.runtime.run(args)
        try:
            async with asyncio.timeout(budget):
                return await step.runtime.run(args, deadline=time.monotonic() + budget)
        except TimeoutError:
            if step.timeout_s is not None and budget == step.timeout_s:
                msg = f"node '{step.name}' exceeded its timeout of {step.timeout_s * 1000:g} ms"
            else:
                msg = f"request deadline exceeded while node '{step.name}' was running"
            raise DeadlineExceeded(msg, node=step.name) from None

    async def _route(
        self, step: RouteStep, args: list[np.ndarray], values: Values
    ) -> tuple[tuple[np.ndarray, ...], dict[str, int]]:
        assignment = np.asarray(step.router(args))
        n = assignment.shape[0]
        if self.arms is not None and step.kind == "split":
            self.arms[step.name] = (assignment, tuple(b.label for b in step.branches))
        branch_rows = dict.fromkeys([b.label for b in step.branches], 0)
        if n and (n == 1 or not (assignment != assignment[0]).any()):
            # Every row takes one branch (always so at batch 1): no partition, no reassembly.
            branch = step.branches[int(assignment[0])]
            branch_rows[branch.label] = n
            return await self._branch(branch, None, n, values), branch_rows
        parts: list[tuple[np.ndarray, tuple[np.ndarray, ...]]] = []
        for index, branch in enumerate(step.branches):
            rows = np.flatnonzero(assignment == index)
            branch_rows[branch.label] = int(rows.shape[0])
            if rows.shape[0]:
                parts.append((rows, await self._branch(branch, rows, n, values)))
        return _reassemble(step, n, parts), branch_rows

    async def _branch(
        self, branch: Branch, rows: np.ndarray | None, n: int, values: Values
    ) -> tuple[np.ndarray, ...]:
        """Run ``branch`` on ``rows`` of the batch (``None``: on every row)."""
        local = list(values)
        for slot in branch.row_inputs:
            array = values[slot]
            if array is None:
                raise InternalError(f"branch '{branch.label}' reads an empty slot {slot}")
            if array.ndim == 0 or array.shape[0] != n:
                name = self.runner.plan.slot_names[slot]
                raise InvalidRequest(
                    f"'{name}' has {array.shape[0] if array.ndim else 0} rows but the batch has {n}; "
                    f"branch '{branch.label}' needs one row per batch row"
                )
            if rows is not None:
                local[slot] = array[rows]
        for inner in branch.steps:
            await self.step(inner, local)
        return tuple(local[slot] for slot in branch.results)  # type: ignore[misc]  # the branch filled them

    def _fail(self, step: Step, start: int, exc: BaseException | None, recovered: str | None = None) -> None:
        duration = time.perf_counter_ns() - start
        self.runner._node_stats[step.name].record(False, duration, 0)
        if self.observer is not None:
            error = str(exc) if isinstance(exc, EngineError) else type(exc).__name__ if exc else "cancelled"
            if recovered is not None:
                error = f"{error} (recovered: {recovered})"
            self._observe(step, start, duration, 0, [], (), None, error)

    def _observe(
        self,
        step: Step,
        start: int,
        duration: int,
        rows: int,
        args: Sequence[np.ndarray | None],
        outs: Sequence[np.ndarray],
        branch_rows: dict[str, int] | None,
        error: str | None,
        queue_ns: int = 0,
        statuses: np.ndarray | None = None,
        batch: int = 0,
    ) -> None:
        names = self.runner.plan.slot_names
        assert self.observer is not None
        self.observer.on_node(
            NodeEvent(
                graph=self.runner.plan.graph,
                version=self.runner.plan.version,
                node=step.name,
                kind=step.kind,
                start_ns=start - self.t0,
                duration_ns=duration,
                rows=rows,
                inputs={names[i]: a for i, a in zip(step.inputs, args, strict=False) if a is not None},
                outputs=dict(zip(step.output_names, outs, strict=False)),
                branch=branch_rows,
                error=error,
                queue_ns=queue_ns,
                batch_size=batch,
                feature_status=(
                    {name: statuses[:, k] for k, name in enumerate(step.output_names)}
                    if statuses is not None
                    else None
                ),
                source=step.source_name if isinstance(step, FeatureStep) else None,
            )
        )


def _reassemble(
    step: RouteStep, n: int, parts: list[tuple[np.ndarray, tuple[np.ndarray, ...]]]
) -> tuple[np.ndarray, ...]:
    if len(parts) == 1 and parts[0][0].shape[0] == n:
        return parts[0][1]  # every row took one branch: its outputs are already in order
    outs: list[np.ndarray] = []
    for k, spec in enumerate(step.output_specs):
        if parts:
            first = parts[0][1][k]
            out = np.empty((n, *first.shape[1:]), dtype=first.dtype)
            for rows, results in parts:
                out[rows] = results[k]
        else:  # an empty batch: nothing ran
            tail = tuple(max(d, 0) for d in spec.shape[1:])
            out = np.empty((0, *tail), dtype=spec.datatype.numpy_dtype)
        outs.append(out)
    return tuple(outs)


def _batch_rows(plan: Plan, values: Values) -> int:
    rows = -1
    for slot in plan.batch_inputs:
        array = values[slot]
        assert array is not None
        n = int(array.shape[0])
        if rows == -1:
            rows = n
        elif n != rows:
            first = plan.slot_names[plan.batch_inputs[0]]
            raise InvalidRequest(
                f"inputs disagree on batch size: '{first}' has {rows} rows, "
                f"'{plan.slot_names[slot]}' has {n}",
                tensor=plan.slot_names[slot],
            )
    return max(rows, 0)


def _attribute(exc: EngineError, node: str) -> EngineError:
    """Name the node in an error raised inside it (once)."""
    if exc.node is None:
        exc.node = node
        exc.message = f"node '{node}': {exc.message}"
        exc.args = (exc.message,)
    return exc


def _first_error(group: BaseExceptionGroup) -> BaseException:
    leaves: list[BaseException] = []
    stack: list[BaseException] = [group]
    while stack:
        exc = stack.pop()
        if isinstance(exc, BaseExceptionGroup):
            stack.extend(reversed(exc.exceptions))
        else:
            leaves.append(exc)
    for exc in leaves:
        if isinstance(exc, EngineError):
            return exc
    return next((e for e in leaves if not isinstance(e, asyncio.CancelledError)), leaves[0])


def _needs_absent(step: Step, args: list[np.ndarray | None], values: Values) -> bool:
    """Whether ``step`` reads a slot an optional node left empty (its branches' inputs included)."""
    if any(a is None for a in args):
        return True
    if isinstance(step, RouteStep):
        return any(values[slot] is None for branch in step.branches for slot in branch.row_inputs)
    return False


def _all_steps(plan: Plan) -> list[Step]:
    found: list[Step] = []

    def visit(step: Step) -> None:
        found.append(step)
        if isinstance(step, RouteStep):
            for branch in step.branches:
                for inner in branch.steps:
                    visit(inner)
        if isinstance(step.recovery, Fallback):
            for inner in step.recovery.steps:
                visit(inner)

    for stage in plan.stages:
        for step in stage:
            visit(step)
    return found
