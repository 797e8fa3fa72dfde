"""Process bootstrap: the one place where concrete parts are wired together.

``EngineServer`` builds the graph repository, the model runtime factory, the shadow
dispatcher, the request log and tracing, hands them to the inference core
(``engine.serving``), puts the gRPC and the HTTP/REST front doors in front of it, and owns
the lifecycle:

    start:  load every graph (validate, warm up) -> health SERVING -> ready
    drain:  health NOT_SERVING -> (drain delay, still serving) -> new calls UNAVAILABLE while
            in-flight calls finish within the grace period (open streams then end with
            UNAVAILABLE) -> stop the gRPC and HTTP servers -> close runtimes
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import ssl
import time
from collections.abc import Collection
from contextlib import suppress
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry.sdk.trace.export import SpanExporter

from adapters.registry import FeatureCatalog
from engine import compiled
from engine.config import ServeSettings
from engine.errors import EngineError
from engine.interfaces import RuntimeFactory
from engine.monitoring.drift import COUNT_INTERVAL_S, DriftRow, drift_rows, merge_drift
from engine.monitoring.quality import Quality, merge_quality
from engine.observability.log_config import recorder_options, request_log_from_config
from engine.observability.metrics import EngineSnapshot, MetricsServer, RolloutRow
from engine.observability.recorder import Recorder
from engine.observability.request_record import event_record, hash_key_from_env
from engine.observability.tracing import NodeSpans, ShadowSpans, TracingSettings, setup_tracing
from engine.protocol import admin, codec, inference
from engine.protocol.admin import AdminService
from engine.protocol.generated import POOL
from engine.protocol.inference import GrpcOptions, InferenceService
from engine.registry import ModelSources
from engine.repository import GraphRepository
from engine.rest.codec import RestLimits
from engine.rest.routes import RestDoor, RestOptions
from engine.rest.server import RestServer, tls_context
from engine.runtimes.onnx import OnnxRuntimeFactory
from engine.serving import ControlPlane, InferenceCore, LocalControl, ServerAdmin, ServingState
from engine.serving.admission import Admission, LoopLagMonitor
from engine.serving.auth import TokenGuard
from engine.serving.operations import ServerOperations
from engine.serving.rollout import Rollouts
from engine.serving.rollout_driver import RolloutDriver
from engine.serving.tracing import RequestTracing
from engine.shadow.dispatch import ShadowDispatcher
from engine.shadow.report import ShadowReport
from engine.shadow.runner import ShadowPool

log = logging.getLogger("engine.server")

DRAIN_POLL_S = 0.01
"""How often a drain checks whether the in-flight calls have finished."""
DRAIN_QUIET_S = 0.2
TOKEN_POLL_S = 1.0  # how often the bearer-token files are checked for a rotation
"""A drain stops the gRPC server once no call has arrived for this long (or the grace is over)."""


class EngineServer:
    def __init__(
        self,
        settings: ServeSettings,
        runtimes: RuntimeFactory | None = None,
        *,
        span_exporter: SpanExporter | None = None,
        control: ControlPlane | None = None,
    ) -> None:
        """``control`` carries state changes to every worker of the server (``engine.fleet``);
        by default the server is this one process."""
        self.settings = settings
        self.runtimes = runtimes or OnnxRuntimeFactory(
            max_workers=settings.pool_threads,
            shadow_workers=max(1, settings.shadow_concurrency),
            max_model_bytes=settings.max_model_bytes,
        )
        # Feature sources are built (not connected: clients connect on first use) before any graph
        # loads, so a features node can be checked against its source's declared fields.
        self.features = FeatureCatalog.from_config(settings.feature_sources)
        # Shadow work: its own concurrency limit and queue, sampled by request id when there is one.
        self.shadows = ShadowPool(settings.shadow_concurrency, settings.shadow_queue, sampling="request_id")
        self.dispatcher = ShadowDispatcher(self.shadows)
        # `model:` references (MLflow registry models, pinned URLs), fetched into the shared cache.
        # httpx logs each request at INFO: every --reload-interval poll's alias check would be a line.
        if not log.isEnabledFor(logging.DEBUG):
            logging.getLogger("httpx").setLevel(logging.WARNING)
        self.model_sources = ModelSources.from_config(
            settings.model_registry, model_cache_dir(settings.model_cache)
        )
        self.repository = GraphRepository(
            settings.graphs,
            self.runtimes,
            self.features,
            self.dispatcher,
            self.model_sources,
            monitoring=settings.monitoring,
        )
        self.state = ServingState(
            admission=Admission(
                limit=settings.max_concurrency,
                max_queue=settings.max_queue,
                max_wait_s=settings.max_queue_wait_s,
            ),
        )
        self.grpc_options = GrpcOptions(
            limits=codec.CodecLimits(
                max_elements=settings.max_elements, max_request_bytes=settings.max_message_bytes
            ),
            guard=TokenGuard(
                inference_tokens=_tokens("ENGINE_AUTH_TOKEN", settings.auth_token_file),
                admin_tokens=_tokens("ENGINE_ADMIN_TOKEN", settings.admin_token_file),
            ),
            max_batch_size=settings.max_batch_size,
        )
        # rollouts: every worker routes; one (the only process, or worker 0) judges and keeps the state file
        self._judges_rollouts = getattr(control, "index", 0) == 0
        self.rollouts = Rollouts(
            self.repository,
            self.dispatcher,
            Path(settings.rollout_state_dir) if settings.rollout_state_dir else settings.graphs / ".rollouts",
            persist=self._judges_rollouts,
            on_event=self._rollout_event,
        )
        self.operations = ServerOperations(self.repository, self.dispatcher.comparisons, self.rollouts)
        self.control = control or LocalControl(self.operations.run)
        self.health = health.aio.HealthServicer()
        self.tracer_provider = setup_tracing(
            TracingSettings(
                exporter=settings.trace_exporter,
                endpoint=settings.trace_endpoint,
                sample_ratio=settings.trace_sample_ratio,
            ),
            exporter=span_exporter,
        )
        self.tracing = (
            RequestTracing(self.tracer_provider.get_tracer("engine"), NodeSpans)
            if self.tracer_provider is not None
            else None
        )
        if self.tracer_provider is not None:  # a span per shadow run, linked to its live request
            self.shadows.hook = ShadowSpans(self.tracer_provider.get_tracer("engine"))
        self.request_log = request_log_from_config(settings.request_log) if settings.request_log else None
        self.recorder = (
            Recorder(
                self.request_log,
                hash_key_from_env(required=False),
                **recorder_options(settings.request_log),
            )
            if self.request_log is not None
            else None
        )
        self.core = InferenceCore(
            self.repository,
            self.state,
            dispatcher=self.dispatcher,
            recorder=self.recorder,
            tracing=self.tracing,
            rollouts=self.rollouts,
        )
        self.admin = ServerAdmin(self.repository, self.state, self.control, self.rollouts)
        self.metrics = MetricsServer(self.snapshot) if settings.metrics_port >= 0 else None
        self.metrics_port = 0
        self.port = 0
        self.http = (
            RestServer(
                RestDoor(
                    self.core,
                    self.admin,
                    RestOptions(
                        limits=RestLimits(settings.max_elements, settings.max_message_bytes),
                        guard=self.grpc_options.guard,
                        max_batch_size=settings.max_batch_size,
                    ),
                )
            )
            if settings.http_port >= 0
            else None
        )
        self.http_port = 0
        self._server: grpc.aio.Server | None = None
        self._health_server: grpc.aio.Server | None = None  # --health-port
        self.health_port = 0
        self._stopped = asyncio.Event()
        self._stopping = False
        self._abandon = asyncio.Event()  # a second stop signal: end the drain now
        self._reloading: asyncio.Future[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._counter: asyncio.Task[None] | None = None  # drift counting, off the response path
        self._token_watcher: asyncio.Task[None] | None = None
        self._rollout_driver: asyncio.Task[None] | None = None  # judges running rollouts
        self._lag_monitor: LoopLagMonitor | None = None
        self._health_updates: set[asyncio.Future[None]] = set()

    async def start(self, unloaded: Collection[str] = ()) -> int:
        """Load the graphs, bind, and start serving; returns the bound port.

        ``unloaded``: graphs the server has unloaded (a restarted worker of a fleet) are loaded
        and then unloaded before this process reports ready."""
        options = [
            ("grpc.max_receive_message_length", self.settings.max_message_bytes),
            ("grpc.max_send_message_length", self.settings.max_message_bytes),
            ("grpc.so_reuseport", 1),
        ]
        if self.settings.max_connection_age_s > 0:
            # Clients reconnect (and re-resolve DNS, seeing new pods) this often; calls in flight
            # on a closing connection get the grace period to finish.
            options.append(("grpc.max_connection_age_ms", int(self.settings.max_connection_age_s * 1000)))
            options.append(("grpc.max_connection_age_grace_ms", int(self.settings.grace_s * 1000)))
        pending = self.settings.max_pending_rpcs
        if pending > 0:  # gRPC's C core refuses calls beyond it while they wait to be picked up
            options.append(("grpc.server.max_pending_requests", pending))
            options.append(("grpc.server.max_pending_requests_hard_limit", pending))
        limit = self.settings.max_concurrent_rpcs
        # With a limit, grpc refuses calls beyond it (RESOURCE_EXHAUSTED) as they arrive, before
        # any handler runs or a request is read: the queue of a flood forms nowhere in this process.
        server = grpc.aio.server(options=options, maximum_concurrent_rpcs=limit if limit > 0 else None)
        server.add_generic_rpc_handlers(
            (
                InferenceService(self.core, self.admin, self.grpc_options).handler(),
                AdminService(
                    self.core,
                    self.admin,
                    self.grpc_options,
                    self.request_log.counters if self.request_log is not None else None,
                ).handler(),
            )
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        if self.settings.reflection:
            names = (
                inference.SERVICE,
                admin.SERVICE,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            )
            if health_pb2.DESCRIPTOR.name not in _registered_files():
                POOL.AddSerializedFile(health_pb2.DESCRIPTOR.serialized_pb)
            reflection.enable_server_reflection(names, server, pool=POOL)
        address = f"{self.settings.host}:{self.settings.port}"
        credentials = _tls_credentials(self.settings)
        if credentials is None:
            self.port = server.add_insecure_port(address)
        else:
            self.port = server.add_secure_port(address, credentials)
        if self.port == 0:
            raise OSError(f"could not bind {self.settings.host}:{self.settings.port}")
        await self.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        self._server = server
        if self.request_log is not None:
            await self.request_log.start()
        await server.start()  # live (ServerLive answers) while graphs load; not ready yet
        if self.http is not None:
            host = self.settings.http_host or self.settings.host
            tls = (
                tls_context(self.settings.tls_cert, self.settings.tls_key, self.settings.tls_client_ca)
                if credentials is not None
                else None
            )
            self.http_port = await self.http.start(host, self.settings.http_port, tls)
            log.info("HTTP/REST on %s://%s:%d/v2", "https" if tls else "http", host, self.http_port)
        if self.settings.health_port >= 0:
            await self._start_health_listener()
        if self.metrics is not None:
            host = self.settings.metrics_host or self.settings.host
            self.metrics_port = self.metrics.start(host, self.settings.metrics_port)
            log.info("metrics on http://%s:%d/metrics", host, self.metrics_port)

        loop = asyncio.get_running_loop()

        def on_change(name: str, ready: bool) -> None:  # called from whichever thread swapped the entry
            loop.call_soon_threadsafe(self._set_health, name, ready)

        self.repository.listeners.append(on_change)
        # The stores connect while the graphs load (warm-ups never ask a store), so the first
        # requests do not pay the connection set-up; a store that is down is only logged.
        warming = asyncio.ensure_future(self.features.warm())
        results = await self.repository.load_all()
        await warming
        for result in results:
            if result.action == "failed":
                log.error("graph %s not served: %s", result.name, result.error)
        for name in unloaded:
            with suppress(EngineError):  # a graph whose folder is gone meanwhile
                self.repository.unload(name)
        self.state.ready = True
        if self.settings.max_concurrency > 0:
            self._lag_monitor = LoopLagMonitor(self.state.admission, on_pressure=self.shadows.pressure)
            self._lag_monitor.start()
        if self.settings.reload_interval_s > 0:
            self._watcher = asyncio.create_task(self._watch(self.settings.reload_interval_s))
        if self.settings.monitoring:
            self._counter = asyncio.create_task(count_drift(self.repository))
        token_files = [p for p in (self.settings.auth_token_file, self.settings.admin_token_file) if p]
        if token_files:
            self._token_watcher = asyncio.create_task(self._watch_tokens(token_files))
        if self._judges_rollouts:
            self._rollout_driver = asyncio.create_task(RolloutDriver(self.rollouts, self.control).run())
        await self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        _log_compiled()
        log.info(
            "serving %d graph(s) on %s:%d",
            sum(1 for e in self.repository.entries() if e.versions),
            self.settings.host,
            self.port,
        )
        return self.port

    async def _start_health_listener(self) -> None:
        """grpc.health.v1 alone, in plaintext, on its own port (probes under mutual TLS or a flood)."""
        listener = grpc.aio.server(options=[("grpc.so_reuseport", 1)])
        health_pb2_grpc.add_HealthServicer_to_server(self.health, listener)
        address = f"{self.settings.host}:{self.settings.health_port}"
        self.health_port = listener.add_insecure_port(address)
        if self.health_port == 0:
            raise OSError(f"could not bind the health listener on {address}")
        await listener.start()
        self._health_server = listener
        log.info("health (grpc.health.v1 only) on %s:%d", self.settings.host, self.health_port)

    def _set_health(self, name: str, ready: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        task = asyncio.ensure_future(self.health.set(name, status))
        self._health_updates.add(task)  # held until done, so it cannot be collected mid-flight
        task.add_done_callback(self._health_updates.discard)

    async def stop(self, grace: float | None = None) -> None:
        """Drain: NOT_SERVING, (drain delay, still serving), refuse new calls, let in-flight
        calls finish, close runtimes. A second call waits for the first to finish."""
        if self._server is None:  # never started: nothing to drain
            self._stopped.set()
            return
        if self._stopping:
            await self._stopped.wait()
            return
        self._stopping = True
        self.state.stopping = True
        if self._lag_monitor is not None:
            self._lag_monitor.stop()
        if self._watcher is not None:
            self._watcher.cancel()
        if self._counter is not None:
            self._counter.cancel()
        if self._token_watcher is not None:
            self._token_watcher.cancel()
        if self._rollout_driver is not None:
            self._rollout_driver.cancel()
        grace = self.settings.grace_s if grace is None else grace
        await self.health.enter_graceful_shutdown()
        if self.settings.drain_delay_s > 0:  # load balancers see NOT_SERVING; calls still served
            log.info("health NOT_SERVING; serving for %.1fs more", self.settings.drain_delay_s)
            await self._pause(self.settings.drain_delay_s)
        self.state.begin_drain()  # open streams end once their in-flight messages are answered
        log.info("draining: %d call(s) in flight, grace %.1fs", self.state.in_flight, grace)
        # Keep accepting while in-flight calls finish, so a call arriving meanwhile gets a clean,
        # retryable UNAVAILABLE ("server is draining") instead of being cancelled by grpc's
        # shutdown; then stop the server with whatever grace is left.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        abandon = self._abandon
        while self.state.in_flight and loop.time() < deadline and not abandon.is_set():  # noqa: ASYNC110
            await asyncio.sleep(DRAIN_POLL_S)
        # Then keep refusing cleanly until calls stop arriving: one that raced grpc's own
        # shutdown would be CANCELLED (not retryable by most clients) instead of UNAVAILABLE.
        while (  # noqa: ASYNC110
            time.monotonic() - self.state.last_arrival < DRAIN_QUIET_S
            and loop.time() < deadline
            and not abandon.is_set()
        ):
            await asyncio.sleep(DRAIN_POLL_S)
        left = 0.0 if abandon.is_set() else max(0.0, deadline - loop.time())
        if self.http is not None:
            await asyncio.gather(self._stop_grpc(left), self.http.stop(left))
        else:
            await self._stop_grpc(left)
        if abandon.is_set():
            deadline = loop.time()  # nothing more is waited for than the minimum below
        if self._health_server is not None:  # probes saw NOT_SERVING throughout the drain
            await self._health_server.stop(0)
        # In-flight shadows get what is left of the grace; the rest are cancelled (and counted).
        await self.shadows.drain(max(0.0, deadline - loop.time()))
        self.runtimes.close()
        self.model_sources.close()
        await self.features.close()
        least = 0.1 if abandon.is_set() else 0.5
        if self.recorder is not None:  # records that waited for their shadows
            await self.recorder.flush(max(least, deadline - loop.time()))
        if self.request_log is not None:  # flush what is queued within what is left of the grace
            await self.request_log.close(timeout=max(2 * least, deadline - loop.time()))
        if self.tracer_provider is not None:
            self.tracer_provider.shutdown()  # flushes spans still queued for export
        if self.metrics is not None:
            self.metrics.stop()
        log.info("stopped")
        self._stopped.set()

    def abandon(self) -> None:
        """End a drain at once (a second SIGTERM/SIGINT): calls still in flight are cancelled, and
        counted in the log. Before a stop began it does nothing."""
        if not self._stopping or self._abandon.is_set():
            return
        log.warning(
            "second stop signal: ending the drain now; abandoning %d call(s) in flight and %d shadow(s)",
            self.state.in_flight,
            self.shadows.in_flight + self.shadows.queued,
        )
        self._abandon.set()

    async def _pause(self, seconds: float) -> None:
        """Sleep ``seconds``, or less if the drain is abandoned meanwhile."""
        with suppress(TimeoutError):
            await asyncio.wait_for(self._abandon.wait(), seconds)

    async def _stop_grpc(self, grace: float) -> None:
        """Stop the gRPC server within ``grace``, cancelling its calls at once if abandoned meanwhile."""
        assert self._server is not None
        stopping = asyncio.ensure_future(self._server.stop(grace))
        abandoned = asyncio.ensure_future(self._abandon.wait())
        try:
            await asyncio.wait({stopping, abandoned}, return_when=asyncio.FIRST_COMPLETED)
            if not stopping.done():
                await self._server.stop(0)  # cancels every call still running
            await stopping
        finally:
            abandoned.cancel()

    def request_reload(self, *, polled: bool = False) -> None:
        """Re-read every graph folder soon (SIGHUP, the reload interval); never raises. ``polled``
        (the reload interval): folders still being written wait, rejected files are not re-read."""
        if self._stopping or (self._reloading is not None and not self._reloading.done()):
            return
        self._reloading = asyncio.ensure_future(self._reload_all(polled))

    async def _reload_all(self, polled: bool = False) -> None:
        try:
            results = await self.admin.reload(automatic=polled)
        except Exception:  # a reload must never take the server down
            log.exception("reload failed")
            return
        for result in results:
            if result.action == "failed":
                log.error(
                    "graph %s: new version rejected, previous one keeps serving: %s",
                    result.name,
                    result.error,
                )
            elif result.action != "unchanged":
                log.info("graph %s version %s %s", result.name, result.version or "-", result.action)

    async def _watch(self, interval: float) -> None:
        """Poll the graph folders: each replica picks up a changed volume by itself (the workers of
        one replica through the control plane, so they swap together)."""
        while True:
            await asyncio.sleep(interval)
            self.request_reload(polled=True)

    async def _watch_tokens(self, paths: list[str]) -> None:
        """Re-read the bearer-token files when they change (rotation), every ``TOKEN_POLL_S``."""
        seen = _file_stamp(paths)
        while True:
            await asyncio.sleep(TOKEN_POLL_S)
            stamp = _file_stamp(paths)
            if stamp is None or stamp == seen:
                continue
            try:
                inference = _tokens("ENGINE_AUTH_TOKEN", self.settings.auth_token_file)
                admin = _tokens("ENGINE_ADMIN_TOKEN", self.settings.admin_token_file)
            except ValueError as exc:
                log.warning("bearer tokens not reloaded: %s", exc)
                continue
            seen = stamp
            if self.grpc_options.guard.rotate(inference, admin):
                log.info("bearer tokens reloaded from their files")

    def snapshot(self) -> EngineSnapshot:
        """What a metrics scrape reads (called on the metrics thread; reads only)."""
        graphs, ready = [], []
        for entry in self.repository.entries():
            for version, served in list(entry.versions.items()):
                graphs.append(served.stats)
                ready.append((entry.name, version, not entry.unloaded))
        return EngineSnapshot(
            graphs=graphs,
            ready=ready,
            load_failures=dict(self.repository.load_failures),
            unrouted=dict(self.state.unrouted),
            calls=dict(self.state.calls),
            in_flight=self.state.in_flight,
            pool_queue_depth=self.runtimes.queue_depth,
            pool_runs_terminated=self.runtimes.terminated_runs,
            request_log=self.request_log.counters() if self.request_log is not None else {},
            shed=dict(self.state.admission.rejected),
            admission_queue_depth=self.state.admission.queued,
            shadows=self._shadow_report(),
            shadow_pool={"in_flight": self.shadows.in_flight, "queued": self.shadows.queued},
            drift=self._drift_rows(),
            quality=self._quality(),
            shadow_shed=dict(self.shadows.shed_reasons),
            loop_lag_s=self.state.admission.loop_lag_s,
            rollouts=self._rollout_rows(),
        )

    def _rollout_event(self, event: str, graph: str, fields: dict[str, Any]) -> None:
        """A rollout's transition as a line of the request log (when there is one)."""
        if self.request_log is not None:
            self.request_log.submit(event_record(event, graph, **fields))

    def _rollout_rows(self) -> list[RolloutRow]:
        """This process's rollouts for a scrape (metrics thread; reads only)."""
        rows = []
        for rollout in list(self.rollouts.rollouts.values()):
            arms = {"serving": rollout.live, "candidate": rollout.cand}
            p99 = {side: counts.p99() for side, counts in arms.items()}
            rows.append(
                RolloutRow(
                    graph=rollout.graph,
                    candidate=rollout.candidate.version,
                    state=rollout.status,
                    step=rollout.step + 1,
                    weight=rollout.weight,
                    requests={side: counts.requests for side, counts in arms.items()},
                    errors={side: counts.errors for side, counts in arms.items()},
                    p99_s={side: None if v is None else v / 1e6 for side, v in p99.items()},
                )
            )
        return rows

    def _drift_rows(self) -> list[DriftRow]:
        """This process's drift numbers for a scrape (metrics thread; counting may race it: a
        window is then a few requests behind; a dict resized meanwhile skips one scrape)."""
        rows: list[DriftRow] = []
        try:
            for drift in self.repository.drifts():
                rows.extend(drift_rows(merge_drift([drift.state()])[0], drift.profile))
        except (RuntimeError, ValueError):
            return []
        return rows

    def _quality(self) -> list[Quality]:
        """This process's live quality for a scrape (metrics thread; as ``_drift_rows``)."""
        try:
            return merge_quality([w.state() for w in self.repository.quality_windows()])
        except RuntimeError:
            return []

    def _shadow_report(self) -> ShadowReport | None:
        """The shadows' numbers for a scrape (metrics thread); a reload racing it skips one scrape."""
        try:
            return self.dispatcher.comparisons.report()
        except RuntimeError:  # a dict resized by the event loop while this thread read it
            return None

    async def wait(self) -> None:
        await self._stopped.wait()


async def count_drift(repository: GraphRepository) -> None:
    """Count every monitored version's queued requests on its reference bins, a few times a second."""
    while True:
        await asyncio.sleep(COUNT_INTERVAL_S)
        for drift in repository.drifts():
            try:
                drift.count()
            except Exception:  # monitoring must never take serving down
                log.exception("drift counting failed for %s %s", drift.graph, drift.version)
                drift.pending.clear()


def freeze_startup_heap() -> None:
    """Move what start-up built (modules, grpc, onnxruntime, the first graphs) out of the cyclic GC.

    Measured in the soak (fraud graph, 200 req/s, every request logged): about 80,000 objects
    survive start-up and every full (generation 2) collection walked all of them, a 60-70 ms pause
    of the event loop every 1.5-2 s, because request-log records waiting for the writer keep
    promoting objects into generation 2. Frozen, they are never walked again (full collections
    took 4-9 ms); they are still freed by reference counting, which is how a swapped-out graph
    version goes (tests/integration/test_reload.py). Done by the process entry point, not by
    ``EngineServer``, so tests that run servers in-process keep their collector as it was.
    """
    gc.collect()
    gc.freeze()


def model_cache_dir(configured: str) -> Path:
    """The ``model_cache`` setting's folder, or the user's cache folder when it is not set."""
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "graph-engine" / "models"


def _tokens(env: str, path: str) -> tuple[bytes, ...]:
    """Bearer tokens from an environment variable and/or a file (one per line); never logged."""
    tokens = [os.environ[env].strip()] if os.environ.get(env, "").strip() else []
    if path:
        try:
            tokens += [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
        except OSError as exc:
            raise ValueError(f"token file {path}: {exc.strerror}") from None
    return tuple(t.encode() for t in tokens)


def _tls_credentials(settings: ServeSettings) -> grpc.ServerCredentials | None:
    if not settings.tls_cert and not settings.tls_key:
        if settings.tls_client_ca:
            raise ValueError("--tls-client-ca needs --tls-cert and --tls-key")
        return None
    if not (settings.tls_cert and settings.tls_key):
        raise ValueError("TLS needs both --tls-cert and --tls-key")
    files = _CertificateFiles(settings.tls_cert, settings.tls_key, settings.tls_client_ca)
    return grpc.dynamic_ssl_server_credentials(
        files.initial(),
        files.fetch,  # type: ignore[arg-type]  # None keeps the current configuration (grpc docs)
        require_client_authentication=bool(settings.tls_client_ca),
    )


def _file_stamp(paths: Collection[str]) -> tuple[tuple[int, int, int], ...] | None:
    """(inode, size, mtime) of each file (following symlinks, as Kubernetes secret volumes swap them)."""
    try:
        return tuple((st.st_ino, st.st_size, st.st_mtime_ns) for st in (os.stat(p) for p in paths))
    except OSError:
        return None


class _CertificateFiles:
    """The TLS certificate, key and client CA, read again when they change (cert-manager rotates
    them in place). gRPC asks ``fetch`` before each new connection: a changed, consistent set is
    served to new connections from then on; open connections keep theirs, none is dropped."""

    def __init__(self, cert: str, key: str, ca: str) -> None:
        self.cert, self.key, self.ca = cert, key, ca
        self.paths = tuple(p for p in (cert, key, ca) if p)
        self._stamp = _file_stamp(self.paths)
        self.reloads = 0

    def initial(self) -> grpc.ServerCertificateConfiguration:
        try:
            return self._read()
        except OSError as exc:
            raise ValueError(f"TLS: {exc.filename}: {exc.strerror}") from None
        except ssl.SSLError as exc:
            raise ValueError(f"TLS: the certificate and key do not make a pair: {exc.reason}") from None

    def _read(self) -> grpc.ServerCertificateConfiguration:
        chain, key = Path(self.cert).read_bytes(), Path(self.key).read_bytes()
        ca = Path(self.ca).read_bytes() if self.ca else None
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(self.cert, self.key)  # a pair?
        return grpc.ssl_server_certificate_configuration([(key, chain)], root_certificates=ca)

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """The new configuration if the files changed and are usable; None keeps the current one."""
        stamp = _file_stamp(self.paths)
        if stamp is None or stamp == self._stamp:
            return None
        try:
            config = self._read()
        except (OSError, ssl.SSLError) as exc:  # mid-rotation (a new cert, the old key): next time
            log.warning("TLS files changed but cannot be used yet (%s); still serving the previous ones", exc)
            return None
        self._stamp = stamp
        self.reloads += 1
        log.info("TLS certificate reloaded from %s", self.cert)
        return config


def _registered_files() -> set[str]:
    """Proto files already in our private descriptor pool (reflection serves from it)."""
    names = set()
    for name in (health_pb2.DESCRIPTOR.name,):
        try:
            POOL.FindFileByName(name)
            names.add(name)
        except KeyError:
            pass
    return names


async def serve(settings: ServeSettings) -> None:
    """Run until SIGTERM or SIGINT, then drain and return; a second SIGTERM/SIGINT ends the drain
    at once. SIGHUP reloads every graph."""
    server = EngineServer(settings)
    loop = asyncio.get_running_loop()
    stop_requested = asyncio.Event()

    def on_stop_signal() -> None:  # the first starts the drain; a second one ends it at once
        if stop_requested.is_set():
            server.abandon()
        stop_requested.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        with suppress(NotImplementedError):
            loop.add_signal_handler(sig, on_stop_signal)
    with suppress(NotImplementedError):
        loop.add_signal_handler(signal.SIGHUP, server.request_reload)
    await server.start()
    freeze_startup_heap()
    await stop_requested.wait()
    log.info("signal received")
    await server.stop()


def run(settings: ServeSettings) -> None:
    """Entry point for one server process, on uvloop when available and wanted."""
    from engine.logging_setup import setup_logging

    setup_logging(settings.log_level, settings.log_format)
    loop_factory = None
    if settings.uvloop:
        try:
            import uvloop

            loop_factory = uvloop.new_event_loop
        except ImportError:
            pass
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(serve(settings))


def _log_compiled() -> None:
    """Say whether the hot path runs compiled (setup.py), and warn of extensions older than sources."""
    modules = compiled.loaded_compiled()
    if modules:
        log.info("hot path compiled: %d modules (mypyc)", len(modules))
    else:
        log.info("hot path interpreted (no compiled modules)")
    stale = compiled.stale()
    if stale:
        log.warning(
            "%d compiled modules are older than the sources, which are not what runs: `make compiled`",
            len(stale),
        )
