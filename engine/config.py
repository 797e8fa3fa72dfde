"""Server settings: each declared once, with its type, default and environment variable.

Precedence: command-line flag > ``ENGINE_<NAME>`` environment variable > the
config file (``--config FILE`` or ``ENGINE_CONFIG``: a YAML mapping of these same
names; a ``tracing:`` section maps to the ``trace_*`` settings) > default.
"""

from __future__ import annotations

import difflib
import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


@dataclass
class ServeSettings:
    graphs: Path = field(default=Path("graphs"), metadata={"help": "folder of graph folders (ENGINE_GRAPHS)"})
    host: str = field(default="127.0.0.1", metadata={"help": "address to bind (ENGINE_HOST)"})
    port: int = field(default=8001, metadata={"help": "gRPC port; 0 picks a free one (ENGINE_PORT)"})
    workers: int = field(
        default=0,
        metadata={
            "help": "server processes sharing the port with SO_REUSEPORT; default 0 = one per usable core "
            "(the CPU affinity, not a container's CPU quota), or 1 with port 0; 1 = no supervisor "
            "(ENGINE_WORKERS)"
        },
    )
    grace_s: float = field(
        default=10.0,
        metadata={"help": "seconds in-flight requests get to finish on SIGTERM/SIGINT (ENGINE_GRACE_S)"},
    )
    drain_delay_s: float = field(
        default=0.0,
        metadata={
            "help": "seconds between health NOT_SERVING and refusing new calls, "
            "for load balancers (ENGINE_DRAIN_DELAY_S)"
        },
    )
    max_message_bytes: int = field(
        default=64 * 1024 * 1024,
        metadata={"help": "largest gRPC message accepted or sent (ENGINE_MAX_MESSAGE_BYTES)"},
    )
    max_elements: int = field(
        default=16_777_216,
        metadata={"help": "largest element count of one request tensor (ENGINE_MAX_ELEMENTS)"},
    )
    max_batch_size: int = field(
        default=1024,
        metadata={
            "help": "max_batch_size reported in ModelConfig for batching graphs (ENGINE_MAX_BATCH_SIZE)"
        },
    )
    pool_threads: int = field(
        default=0,
        metadata={
            "help": "threads running slow models off the event loop; 0 = usable cores (ENGINE_POOL_THREADS)"
        },
    )
    reflection: bool = field(default=True, metadata={"help": "gRPC server reflection (ENGINE_REFLECTION)"})
    uvloop: bool = field(default=True, metadata={"help": "use uvloop when installed (ENGINE_UVLOOP)"})
    log_level: str = field(default="INFO", metadata={"help": "logging level (ENGINE_LOG_LEVEL)"})
    max_concurrency: int = field(
        default=128,
        metadata={
            "help": "inference calls executing at once per process; 0 = no limit (ENGINE_MAX_CONCURRENCY)"
        },
    )
    max_queue: int = field(
        default=512,
        metadata={
            "help": "inference calls allowed to wait for a slot; beyond it RESOURCE_EXHAUSTED "
            "(ENGINE_MAX_QUEUE)"
        },
    )
    max_queue_wait_s: float = field(
        default=0.5,
        metadata={"help": "longest wait for a slot before RESOURCE_EXHAUSTED (ENGINE_MAX_QUEUE_WAIT_S)"},
    )
    tls_cert: str = field(default="", metadata={"help": "PEM certificate chain: serve TLS (ENGINE_TLS_CERT)"})
    tls_key: str = field(default="", metadata={"help": "PEM private key for --tls-cert (ENGINE_TLS_KEY)"})
    tls_client_ca: str = field(
        default="",
        metadata={"help": "PEM CA bundle: require client certificates (mutual TLS) (ENGINE_TLS_CLIENT_CA)"},
    )
    auth_token_file: str = field(
        default="",
        metadata={
            "help": "file of inference bearer tokens, one per line; or the token itself in ENGINE_AUTH_TOKEN "
            "(ENGINE_AUTH_TOKEN_FILE)"
        },
    )
    admin_token_file: str = field(
        default="",
        metadata={
            "help": "file of admin bearer tokens, one per line; or the token itself in ENGINE_ADMIN_TOKEN "
            "(ENGINE_ADMIN_TOKEN_FILE)"
        },
    )
    reload_interval_s: float = field(
        default=0.0,
        metadata={
            "help": "seconds between checks of the graph folders for changes; 0 = only on request "
            "(RepositoryModelLoad, engine reload, SIGHUP) (ENGINE_RELOAD_INTERVAL_S)"
        },
    )
    max_connection_age_s: float = field(
        default=0.0,
        metadata={
            "help": "close client connections after this many seconds so they re-balance; 0 = never "
            "(ENGINE_MAX_CONNECTION_AGE_S)"
        },
    )
    request_log: dict[str, Any] = field(
        default_factory=dict,
        metadata={
            "help": "request-log sink, e.g. {sink: jsonl, directory: logs/}; empty = off. In engine.yaml "
            "a mapping, in ENGINE_REQUEST_LOG JSON; see docs/request-log.md"
        },
    )
    shadow_concurrency: int = field(
        default=2,
        metadata={"help": "shadow (candidate) runs at once per process (ENGINE_SHADOW_CONCURRENCY)"},
    )
    shadow_queue: int = field(
        default=64,
        metadata={
            "help": "shadow runs allowed to wait; beyond it (or while live calls queue) shadows are shed "
            "(ENGINE_SHADOW_QUEUE)"
        },
    )
    feature_sources: dict[str, Any] = field(
        default_factory=dict,
        metadata={
            "help": "feature sources graphs may read, by name, e.g. {users: {type: redis, url: ...}}. In "
            "engine.yaml a mapping, in ENGINE_FEATURE_SOURCES JSON; see docs/features.md"
        },
    )
    metrics_port: int = field(
        default=8002,
        metadata={
            "help": "Prometheus /metrics HTTP port; 0 picks a free one, -1 turns it off (ENGINE_METRICS_PORT)"
        },
    )
    metrics_host: str = field(
        default="", metadata={"help": "address for /metrics; empty = the gRPC host (ENGINE_METRICS_HOST)"}
    )
    trace_exporter: str = field(
        default="none",
        metadata={"help": "none | console | otlp | discard (sample, export nowhere) (ENGINE_TRACE_EXPORTER)"},
    )
    trace_endpoint: str = field(
        default="127.0.0.1:4317", metadata={"help": "OTLP gRPC collector address (ENGINE_TRACE_ENDPOINT)"}
    )
    trace_sample_ratio: float = field(
        default=1.0,
        metadata={
            "help": "share of root requests traced; a caller's sampled flag wins (ENGINE_TRACE_SAMPLE_RATIO)"
        },
    )

    @classmethod
    def from_env(
        cls, environ: dict[str, str] | None = None, *, config: Path | None = None, **overrides: object
    ) -> ServeSettings:
        """Defaults, the config file, ``ENGINE_*`` variables, then ``overrides`` that are not None."""
        env = os.environ if environ is None else environ
        settings = cls()
        config = config or (Path(env["ENGINE_CONFIG"]) if env.get("ENGINE_CONFIG") else None)
        graphs = overrides.get("graphs") or env.get("ENGINE_GRAPHS") or settings.graphs
        own = repository_config(Path(str(graphs)))  # a graph repository may carry its own engine.yaml
        if config is not None:
            for name, value in read_config_file(config).items():
                setattr(settings, name, value)
        if own is not None and (config is None or own.resolve() != config.resolve()):
            # The repository's file is the whole config when none is named; otherwise it still
            # declares the feature sources its graphs read, which the named config may replace by name.
            found = read_config_file(own) if config is None else {}
            for name, value in found.items():
                setattr(settings, name, value)
            if config is not None:
                sources = read_config_file(own).get("feature_sources", {})
                settings.feature_sources = {**sources, **settings.feature_sources}
        for f in fields(cls):
            raw = env.get(f"ENGINE_{f.name.upper()}")
            if raw is not None:
                setattr(settings, f.name, _convert(f.name, raw, type(getattr(settings, f.name))))
            if overrides.get(f.name) is not None:
                setattr(settings, f.name, overrides[f.name])
        if settings.workers == 0:  # one per core; a port picked at random cannot be shared, so then one
            settings.workers = 1 if settings.port == 0 else _usable_cores()
        if settings.pool_threads == 0:
            settings.pool_threads = _usable_cores()
        return settings


REPOSITORY_CONFIG = "engine.yaml"


def repository_config(graphs: Path) -> Path | None:
    """``<graphs>/engine.yaml`` when it exists: the config used when none is named."""
    candidate = graphs / REPOSITORY_CONFIG
    return candidate if candidate.is_file() else None


def _resolve_source_paths(sources: object, base: Path) -> object:
    """``feature_sources`` with each relative ``path:`` made absolute against the config's folder."""
    if not isinstance(sources, dict):
        return sources
    resolved: dict[str, Any] = {}
    for name, entry in sources.items():
        if (
            isinstance(entry, dict)
            and isinstance(entry.get("path"), str)
            and not Path(entry["path"]).is_absolute()
        ):
            entry = {**entry, "path": str((base / entry["path"]).resolve())}
        resolved[name] = entry
    return resolved


def read_config_file(path: Path) -> dict[str, Any]:
    """The settings in a YAML config file, checked against the declared names and types."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"config file {path}: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"config file {path}: expected a mapping of setting names to values")
    tracing = data.pop("tracing", None)
    if isinstance(tracing, dict):
        data.update({f"trace_{key}": value for key, value in tracing.items()})
    declared = {f.name: f for f in fields(ServeSettings)}
    defaults = ServeSettings()
    found: dict[str, Any] = {}
    for key, value in data.items():
        if key not in declared:
            close = difflib.get_close_matches(str(key), declared, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ValueError(f"config file {path}: unknown setting '{key}'{hint}")
        kind = type(getattr(defaults, key))
        if isinstance(value, kind) or (
            kind is float and isinstance(value, int) and not isinstance(value, bool)
        ):
            found[key] = kind(value) if kind is float else value
        else:
            found[key] = _convert(key, str(value), kind)
    if "feature_sources" in found:
        found["feature_sources"] = _resolve_source_paths(found["feature_sources"], path.parent)
    return found


def _convert(name: str, raw: str, kind: type) -> object:
    try:
        if kind is bool:
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if issubclass(kind, Path):
            return Path(raw)
        if kind is dict:
            value = json.loads(raw)
            if not isinstance(value, dict):
                raise ValueError(raw)
            return value
        return kind(raw)
    except ValueError:  # json.JSONDecodeError is a ValueError too
        raise ValueError(f"ENGINE_{name.upper()}={raw!r} is not a valid {kind.__name__}") from None
