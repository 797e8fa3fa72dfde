"""One load run: prepare the target, start the generator processes, watch them, merge what they saw.

The parent process does no load itself. It builds the schedule and the request
pool, spawns ``load.processes`` workers (:mod:`loadtest.generator`), gives them
one common start instant, prints the live progress line, snapshots
ModelStatistics and ``/metrics`` when warm-up ends and again when the last
answer is in, and merges the workers' windows and HDR histograms exactly.
"""

from __future__ import annotations

import math
import multiprocessing
import time
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess

from hdrh.histogram import HdrHistogram

from engine.protocol.generated.inference import grpc_service_pb2 as pb
from loadtest import histograms
from loadtest.generator import RecorderExport, WorkerPlan, worker_main
from loadtest.metrics import MetricsError, Samples, scrape
from loadtest.progress import Progress
from loadtest.schedule import Schedule, build_schedule
from loadtest.sla import Load, Sla
from loadtest.sources import RequestPool, SourceError, build_pool
from loadtest.target import TargetClient

WINDOW_S = 1.0
Worker = tuple[BaseProcess, Connection]  # a generator process and the parent's end of its pipe
Statistics = dict[str, pb.ModelStatistics]  # ModelStatistics entries keyed by "name\0version"


class RunError(Exception):
    """The run could not be carried out (a worker died, the target vanished): exit 2."""


@dataclass(frozen=True)
class Prepared:
    sla: Sla
    metadata: pb.ModelMetadataResponse
    pool: RequestPool


@dataclass
class MergedWindow:
    index: int
    ok: HdrHistogram = field(default_factory=histograms.new)
    all: HdrHistogram = field(default_factory=histograms.new)
    outcomes: Counter[str] = field(default_factory=Counter)
    sent: int = 0
    completed_ok: int = 0
    completed_error: int = 0
    lag_max_us: int = 0


@dataclass
class RunResult:
    schedule: Schedule
    load: Load
    windows: list[MergedWindow]
    ok: HdrHistogram
    all: HdrHistogram
    lag: HdrHistogram
    from_send: HdrHistogram
    late: int
    outcomes: Counter[str]
    sent_in_period: int
    completed_ok_in_period: int
    wall_s: float
    stats_before: Statistics | None = None
    stats_after: Statistics | None = None
    stats_before_late_ns: int = 0  # how long after the warm-up ended the start snapshot was taken
    metrics_before: Samples | None = None
    metrics_after: Samples | None = None

    @property
    def duration_s(self) -> float:
        return self.load.duration_s

    @property
    def requests(self) -> int:
        return sum(self.outcomes.values())

    @property
    def errors(self) -> int:
        return self.requests - self.outcomes.get("OK", 0)


def prepare(sla: Sla) -> Prepared:
    """Reach the target, read the graph's metadata, build the pool and send one preflight request.

    Raises TargetError, SourceError or MetricsError: all mean the SLA cannot run as written (exit 2).
    """
    with TargetClient(sla.target.url, sla.target.timeout_s) as client:
        client.wait_ready(sla.target.timeout_s)
        metadata = client.metadata(sla.target.graph, sla.target.version)
        pool = build_pool(sla.source, sla.target.graph, sla.target.version, metadata)
        rejected = client.preflight(pool.payloads[0])
        if rejected:
            raise SourceError(f"the server rejects the first request of the source: {rejected}")
    if sla.target.metrics:
        scrape(sla.target.metrics)
    return Prepared(sla, metadata, pool)


def run_load(prepared: Prepared, load: Load, progress: Progress | None = None) -> RunResult:
    sla = prepared.sla
    schedule = build_schedule(load)
    context = multiprocessing.get_context("spawn")  # never fork a process that holds gRPC state
    workers: list[Worker] = []
    for index, (arrivals, offsets) in enumerate(schedule.split(load.processes)):
        parent_end, child_end = context.Pipe()
        plan = WorkerPlan(
            index=index,
            url=sla.target.url,
            payloads=prepared.pool.payloads,
            arrivals=arrivals,
            offsets_ns=offsets,
            warmup_ns=schedule.warmup_ns,
            window_ns=int(WINDOW_S * 1e9),
            timeout_s=sla.target.timeout_s,
            max_in_flight=max(1, load.max_in_flight // load.processes),
        )
        process: BaseProcess = context.Process(
            target=worker_main, args=(plan, child_end), name=f"loadtest-{index}", daemon=True
        )
        process.start()
        child_end.close()
        workers.append((process, parent_end))
    try:
        return _supervise(sla, load, schedule, workers, progress)
    finally:
        for process, conn in workers:
            conn.close()
            process.join(5)
            if process.is_alive():
                process.terminate()


def _supervise(
    sla: Sla, load: Load, schedule: Schedule, workers: list[Worker], progress: Progress | None
) -> RunResult:
    conns: list[Connection] = [conn for _, conn in workers]
    _await_ready(workers)
    client = TargetClient(sla.target.url, sla.target.timeout_s)
    result = RunResult(
        schedule=schedule,
        load=load,
        windows=[],
        ok=histograms.new(),
        all=histograms.new(),
        lag=histograms.new(),
        from_send=histograms.new(),
        late=0,
        outcomes=Counter(),
        sent_in_period=0,
        completed_ok_in_period=0,
        wall_s=0.0,
    )
    exports: dict[int, RecorderExport] = {}
    try:
        if schedule.warmup_ns == 0:
            _snapshot_before(sla, client, result)
        start_ns = time.monotonic_ns() + 200_000_000  # every worker is waiting on recv already
        for conn in conns:
            conn.send(start_ns)
        measure_at = start_ns + schedule.warmup_ns
        if progress:
            progress.begin(schedule, start_ns)
        open_conns = list(conns)
        while open_conns:
            poll_s = 0.05
            if schedule.warmup_ns and result.stats_before is None:
                now = time.monotonic_ns()
                if now >= measure_at:
                    _snapshot_before(sla, client, result, measure_at)
                else:  # wake up when the warm-up ends, so the start snapshot is punctual
                    poll_s = min(poll_s, (measure_at - now) / 1e9)
            for conn in _readable(open_conns, poll_s):
                try:
                    kind, index, payload = conn.recv()
                except EOFError:
                    open_conns.remove(conn)
                    if len(exports) < len(workers):
                        missing = sorted(set(range(len(workers))) - set(exports))
                        raise RunError(f"generator process(es) {missing} exited without results") from None
                    continue
                if kind == "progress" and progress:
                    progress.update(index, payload)
                elif kind == "done":
                    exports[index] = payload
                    open_conns.remove(conn)
                elif kind == "error":
                    raise RunError(f"generator process {index} failed: {payload}")
            if progress:
                progress.tick()
        result.wall_s = (time.monotonic_ns() - start_ns) / 1e9
        if result.stats_before is None:  # warm-up shorter than one poll
            _snapshot_before(sla, client, result, measure_at)
        result.stats_after = client.statistics()
        if sla.target.metrics:
            result.metrics_after = _scrape(sla.target.metrics)
    finally:
        client.close()
        if progress:
            progress.end()
    _merge(result, exports)
    return result


def _readable(conns: list[Connection], timeout_s: float) -> list[Connection]:
    """The pipes among ``conns`` with a message (or EOF) waiting, after at most ``timeout_s``."""
    return [conn for conn in wait(conns, timeout=timeout_s) if isinstance(conn, Connection)]


def _await_ready(workers: list[Worker], timeout_s: float = 60.0) -> None:
    pending = {conn: process for process, conn in workers}
    deadline = time.monotonic() + timeout_s
    while pending:
        if time.monotonic() > deadline:
            raise RunError(f"generator processes did not connect within {timeout_s:g} s")
        for conn in _readable(list(pending), 0.5):
            try:
                kind, index, payload = conn.recv()
            except EOFError:
                raise RunError("a generator process exited while starting") from None
            if kind == "error":
                raise RunError(f"generator process {index} could not start: {payload}")
            pending.pop(conn)


def _snapshot_before(
    sla: Sla, client: TargetClient, result: RunResult, measure_at: int | None = None
) -> None:
    result.stats_before = client.statistics() or {}
    if measure_at is not None:  # measured once the answer is in: an upper bound
        result.stats_before_late_ns = max(0, time.monotonic_ns() - measure_at)
    if sla.target.metrics:
        result.metrics_before = _scrape(sla.target.metrics)


def _scrape(url: str) -> Samples:
    try:
        return scrape(url)
    except MetricsError as exc:
        raise RunError(str(exc)) from exc


def _merge(result: RunResult, exports: dict[int, RecorderExport]) -> None:
    windows: dict[int, MergedWindow] = {}
    for export in exports.values():
        histograms.add(result.lag, export["lag"])
        histograms.add(result.from_send, export["from_send"])
        result.late += export["late"]
        for k, part in export["windows"].items():
            merged = windows.setdefault(k, MergedWindow(k))
            histograms.add(merged.ok, part["ok"])
            histograms.add(merged.all, part["all"])
            merged.outcomes.update(part["outcomes"])
            merged.sent += part["sent"]
            merged.completed_ok += part["completed_ok"]
            merged.completed_error += part["completed_error"]
            merged.lag_max_us = max(merged.lag_max_us, part["lag_max_us"])
    n_measured = math.ceil(result.duration_s / WINDOW_S - 1e-9)
    first = min(windows, default=0)
    last = max(max(windows, default=0), n_measured - 1)
    result.windows = [windows.get(k, MergedWindow(k)) for k in range(first, last + 1)]
    for w in result.windows:
        if w.index >= 0:
            histograms.add(result.ok, w.ok)
            histograms.add(result.all, w.all)
            result.outcomes.update(w.outcomes)
        if 0 <= w.index < n_measured:
            result.sent_in_period += w.sent
            result.completed_ok_in_period += w.completed_ok
