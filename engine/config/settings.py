"""``ServeSettings``: every setting of ``engine serve``, each declared once, and how they resolve.

Precedence: command-line flag > ``ENGINE_<NAME>`` environment variable > the config file
(``--config FILE`` or ``ENGINE_CONFIG``, else ``<graphs>/engine.yaml``) > default. Resolved
settings travel whole to ``--workers`` processes as JSON (``to_json`` / ``from_json``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.config import values
from engine.config.declaration import Setting, declarations, setting
from engine.config.files import read_settings_file, repository_config, resolve_source_paths


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _jsonl_directory(text: str) -> dict[str, Any]:
    """``--request-log DIR``: the JSON Lines sink writing into DIR."""
    return {"sink": "jsonl", "directory": text}


@dataclass
class ServeSettings:
    """The resolved settings of one ``engine serve``; ``engine/server.py`` reads them by name."""

    graphs: Path = setting(  # noqa: RUF009 - setting() makes a field; defaults are copied
        Path("graphs"),
        "folder of graph folders (`<name>/graph.yaml` or versioned `<name>/<N>/graph.yaml`)",
        positional=True,
        metavar="DIR",
    )
    host: str = setting("127.0.0.1", "address to bind")
    port: int = setting(8001, "gRPC port; 0 picks a free one")
    http_port: int = setting(
        8000, "V2 HTTP/REST port (docs/http.md); 0 picks a free one, -1 turns the HTTP door off"
    )
    http_host: str = setting("", "address for the HTTP door; empty = the gRPC host")
    workers: int = setting(
        0,
        "server processes sharing the port (SO_REUSEPORT) under a supervisor that restarts a crashed "
        "one; 0 = one per usable core (the CPU affinity, not a container's CPU quota), or 1 with port 0; "
        "1 = one process, no supervisor",
    )
    grace_s: float = setting(10.0, "seconds in-flight calls get to finish on SIGTERM/SIGINT", flag="--grace")
    drain_delay_s: float = setting(
        0.0,
        "seconds between health NOT_SERVING and refusing new calls, for load balancers",
        flag="--drain-delay",
    )
    max_message_bytes: int = setting(64 * 1024 * 1024, "largest gRPC message accepted or sent")
    max_elements: int = setting(
        16_777_216, "largest element count of one request tensor (checked before allocating)"
    )
    max_model_bytes: int = setting(
        2 * 1024 * 1024 * 1024,
        "largest model file a graph may load, checked from its size before it is read; 0 = no limit",
    )
    max_batch_size: int = setting(1024, "max_batch_size reported in ModelConfig for batching graphs")
    pool_threads: int = setting(0, "threads running slow models off the event loop; 0 = usable cores")
    reflection: bool = setting(True, "gRPC server reflection")
    uvloop: bool = setting(True, "use uvloop when installed")
    log_level: str = setting("INFO", "logging level")
    log_format: str = setting(
        "text",
        "server log lines: text, or json (one object per line with time, level, logger, message, "
        "trace_id, span_id, request_id, error_id)",
        choices=("text", "json"),
    )
    max_concurrency: int = setting(128, "inference calls executing at once per process; 0 = no limit")
    max_queue: int = setting(
        512,
        "inference calls allowed to wait for a slot; beyond it RESOURCE_EXHAUSTED with a "
        "`grpc-retry-pushback-ms` trailer (health, metadata and admin calls are never shed)",
    )
    max_queue_wait_s: float = setting(
        0.5, "longest wait for a slot before RESOURCE_EXHAUSTED", flag="--max-queue-wait"
    )
    max_concurrent_rpcs: int = setting(
        0,
        "gRPC calls of any kind the main port takes at once; beyond it gRPC itself answers "
        "RESOURCE_EXHAUSTED before a request is read, so a flood queues nowhere (set it to about "
        "max_concurrency + max_queue, with --health-port so probes never wait behind it); 0 = off",
    )
    max_pending_rpcs: int = setting(
        0,
        "calls gRPC may hold before the server picks them up (a flood of cheap calls queues there, "
        "unseen by admission); beyond it gRPC's C core refuses a call at once, unread, answering "
        "CANCELLED with no retry pushback (docs/deploy.md); keep it well above max_concurrency; "
        "0 = gRPC's default (1000)",
    )
    health_port: int = setting(
        -1,
        "a second, plaintext listener serving only grpc.health.v1, for Kubernetes gRPC probes that "
        "cannot present a client certificate (mutual TLS) or must not queue behind a flood; "
        "0 picks a free port, -1 = off",
    )
    tls_cert: str = setting("", "PEM certificate chain: serve TLS")
    tls_key: str = setting("", "PEM private key for the TLS certificate")
    tls_client_ca: str = setting("", "PEM CA bundle: require client certificates (mutual TLS)")
    auth_token_file: str = setting(
        "",
        "file of inference bearer tokens, one per line (so they can be rotated); or the token itself "
        "in ENGINE_AUTH_TOKEN; none set = open",
    )
    admin_token_file: str = setting(
        "", "file of admin bearer tokens, one per line; or the token itself in ENGINE_ADMIN_TOKEN"
    )
    reload_interval_s: float = setting(
        0.0,
        "seconds between checks of the graph folders for changes (each worker); 0 = only on request "
        "(RepositoryModelLoad, `engine reload`, SIGHUP)",
        flag="--reload-interval",
    )
    max_connection_age_s: float = setting(
        0.0,
        "close client connections after this many seconds so they re-balance; 0 = never",
        flag="--max-connection-age",
    )
    request_log: dict[str, Any] = setting(  # noqa: RUF009 - setting() makes a field; defaults are copied
        {},
        "request-log sink, e.g. `{sink: jsonl, directory: logs/}`; empty = off; `--request-log DIR` is "
        "the JSON Lines sink in DIR; see docs/request-log.md",
        metavar="DIR",
        from_flag=_jsonl_directory,
    )
    shadow_concurrency: int = setting(2, "shadow (candidate) runs at once per process")
    shadow_queue: int = setting(
        64, "shadow runs allowed to wait; beyond it (or while live calls queue) shadows are shed"
    )
    feature_sources: dict[str, Any] = setting(  # noqa: RUF009 - setting() makes a field; defaults are copied
        {},
        "feature sources graphs may read, by name, e.g. `{users: {type: redis, url: ...}}`; relative "
        "`path:` values resolve against the config file's folder; see docs/features.md",
        flag=False,
        in_file=resolve_source_paths,
    )
    monitoring: bool = setting(
        True, "count live values of graphs with a profile.json against it (drift); docs/monitoring.md"
    )
    model_registry: dict[str, Any] = setting(  # noqa: RUF009 - setting() makes a field; defaults are copied
        {},
        "the model registry `models:/NAME/VERSION` and `models:/NAME@ALIAS` are resolved in, e.g. "
        "`{mlflow: {tracking_uri: http://mlflow:5000}}`; credentials only from MLFLOW_TRACKING_TOKEN or "
        "MLFLOW_TRACKING_USERNAME/PASSWORD; see docs/model-sources.md",
        flag=False,
    )
    model_cache: str = setting(
        "",
        "folder of the content-addressed cache registry and URL models are fetched into (shared by the "
        "workers); empty = `$XDG_CACHE_HOME/graph-engine/models` (else `~/.cache/graph-engine/models`)",
    )
    rollout_state_dir: str = setting(
        "",
        "folder where progressive rollouts keep their state (`rollouts.json`), so a restart resumes them; "
        "empty = `<graphs>/.rollouts`",
    )
    metrics_port: int = setting(8002, "Prometheus /metrics HTTP port; 0 picks a free one, -1 turns it off")
    metrics_host: str = setting("", "address for /metrics; empty = the gRPC host")
    trace_exporter: str = setting(
        "none",
        "where spans go: `discard` samples and exports nowhere; see docs/observability.md",
        choices=("none", "console", "otlp", "discard"),
    )
    trace_endpoint: str = setting("127.0.0.1:4317", "OTLP gRPC collector address")
    trace_sample_ratio: float = setting(1.0, "share of root requests traced; a caller's sampled flag wins")

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, config: Path | None = None, **overrides: object
    ) -> ServeSettings:
        """Defaults, the config file, ``ENGINE_*`` variables, then ``overrides`` that are not None.

        When ``config`` (or ``ENGINE_CONFIG``) names a file other than ``<graphs>/engine.yaml``, the
        repository's own file still supplies the feature sources its graphs read (the named file
        replaces them by name); otherwise the repository's file is the config. ``workers`` and
        ``pool_threads`` 0 are resolved to counts here."""
        env = os.environ if environ is None else environ
        declared = _BY_NAME
        unknown = sorted(set(overrides) - set(declared))
        if unknown:
            raise TypeError(f"unknown settings: {', '.join(unknown)}")
        given: dict[str, Any] = {
            k: values.coerce(declared[k], v, "setting") for k, v in overrides.items() if v is not None
        }
        if config is None and env.get("ENGINE_CONFIG"):
            config = Path(env["ENGINE_CONFIG"])
        graphs = given.get("graphs") or env.get("ENGINE_GRAPHS") or declared["graphs"].default
        found = _from_files(config, repository_config(Path(str(graphs))))
        for decl in SETTINGS:
            raw = env.get(decl.env)
            if raw is not None:
                found[decl.name] = values.from_env(decl, raw)
        settings = cls(**{**found, **given})
        if settings.workers == 0:  # one per core; a port picked at random cannot be shared, so then one
            settings.workers = 1 if settings.port == 0 else _usable_cores()
        if settings.pool_threads == 0:
            settings.pool_threads = _usable_cores()
        return settings

    def to_json(self) -> str:
        """Every setting as one JSON object, read back exactly by ``from_json``."""
        return json.dumps({decl.name: values.to_plain(decl, getattr(self, decl.name)) for decl in SETTINGS})

    @classmethod
    def from_json(cls, text: str) -> ServeSettings:
        """Settings written by ``to_json``, taken as they are (nothing is resolved again)."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"settings JSON: {exc}") from None
        declared = _BY_NAME
        if not isinstance(data, dict) or set(data) != set(declared):
            raise ValueError("settings JSON: expected an object with every setting, and only those")
        loaded: dict[str, Any] = {k: values.coerce(declared[k], v, "settings JSON") for k, v in data.items()}
        return cls(**loaded)


def read_config_file(path: Path) -> dict[str, Any]:
    """The settings a YAML config file gives, checked against the declared names and types."""
    return read_settings_file(path, _BY_NAME)


def _from_files(config: Path | None, own: Path | None) -> dict[str, Any]:
    """The settings of the named config file and of the repository's own ``engine.yaml``."""
    found = read_config_file(config) if config is not None else {}
    if own is None or (config is not None and own.resolve() == config.resolve()):
        return found
    if config is None:
        return read_config_file(own)
    sources = read_config_file(own).get("feature_sources", {})
    return {**found, "feature_sources": {**sources, **found.get("feature_sources", {})}}


SETTINGS: tuple[Setting, ...] = declarations(ServeSettings)
"""Every declared setting, in declaration order."""
_BY_NAME: dict[str, Setting] = {decl.name: decl for decl in SETTINGS}
