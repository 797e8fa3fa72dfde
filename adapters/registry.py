"""The ``feature_sources:`` section of ``engine.yaml`` → named ``FeatureSource`` objects.

.. code-block:: yaml

    feature_sources:
      users:
        type: redis                       # redis | postgres | http | static
        url: redis://127.0.0.1:6379/0
        password_env: REDIS_PASSWORD      # credentials only ever from the environment
        key_template: "user:{key}"
        cache: {ttl: 30s}                 # optional; backend: memory (default) | redis

Every key is checked: an unknown key is a ``ValueError`` with a "did you mean"; a literal
credential (``password:``, ``token:``, a password inside a URL or DSN) is an error that
names the ``*_env`` key to use instead. Durations are seconds or text (``20ms``, ``30s``,
``5m``). Relative static-file paths resolve against ``base_dir`` (the config's folder).
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from adapters.cache import DEFAULT_MAX_ENTRIES, CachedSource
from adapters.http import HttpSource
from adapters.postgres import PostgresSource
from adapters.redis import RedisSource
from adapters.static import StaticSource
from engine.interfaces import FeatureSource
from engine.tensors import DataType

_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(us|ms|s|m|h)?\s*$")
_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
_SECRETS = ("password", "token", "secret", "api_key", "apikey")
_COMMON = {"type", "cache", "fields"}
# per type: config key -> (constructor keyword, kind); kind in str | int | duration | env | path
_KEYS: dict[str, dict[str, tuple[str, str]]] = {
    "redis": {
        "url": ("url", "str"),
        "url_env": ("url", "env"),
        "password_env": ("password", "env"),
        "key_template": ("key_template", "str"),
        "timestamp_field": ("timestamp_field", "str"),
        "pool_size": ("pool_size", "int"),
        "pool_timeout": ("pool_timeout_s", "duration"),
        "socket_timeout": ("socket_timeout_s", "duration"),
        "connect_timeout": ("connect_timeout_s", "duration"),
    },
    "postgres": {
        "dsn": ("dsn", "str"),
        "dsn_env": ("dsn", "env"),
        "password_env": ("password", "env"),
        "table": ("table", "str"),
        "key_column": ("key_column", "str"),
        "timestamp_column": ("timestamp_column", "str"),
        "pool_min": ("pool_min", "int"),
        "pool_max": ("pool_max", "int"),
        "connect_timeout": ("connect_timeout_s", "duration"),
        "command_timeout": ("command_timeout_s", "duration"),
    },
    "http": {
        "url": ("url", "str"),
        "url_env": ("url", "env"),
        "token_env": ("token", "env"),
        "feature_view": ("feature_view", "str"),
        "entity_key": ("entity_key", "str"),
        "key_type": ("key_type", "str"),
        "timeout": ("timeout_s", "duration"),
        "pool_size": ("pool_size", "int"),
    },
    "static": {
        "path": ("path", "path"),
        "key_column": ("key_column", "str"),
        "timestamp_column": ("timestamp_column", "str"),
    },
}
_REQUIRED = {
    "redis": (),
    "postgres": ("dsn", "table", "key_column"),
    "http": ("url", "feature_view"),
    "static": ("path", "key_column"),
}
_CACHE_KEYS = {"ttl", "backend", "redis_url", "redis_url_env", "max_entries"}


log = logging.getLogger("engine.features")
WARM_TIMEOUT_S = 5.0
"""The longest start-up waits for the feature sources to connect (then it serves anyway)."""


@dataclass(frozen=True, slots=True)
class CacheConfig:
    ttl_s: float
    backend: str = "memory"
    redis_url: str | None = None
    max_entries: int = DEFAULT_MAX_ENTRIES  # the in-memory backend's bound (least recently used go)


@dataclass(frozen=True, slots=True)
class SourceConfig:
    """One checked entry of ``feature_sources``: constructor keywords with env values resolved."""

    name: str
    type: str
    options: dict[str, Any] = field(default_factory=dict)
    schema: dict[str, DataType] | None = None
    cache: CacheConfig | None = None


def parse_duration(value: object, where: str) -> float:
    """Seconds from a number or ``"20ms"``/``"30s"``/``"5m"``/``"1h"``."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    match = _DURATION.match(str(value))
    if match is None:
        raise ValueError(f"{where}: '{value}' is not a duration (e.g. 20ms, 30s, 5m)")
    return float(match.group(1)) * _UNITS[match.group(2)]


def _unknown(key: str, allowed: set[str] | Mapping[str, object], where: str) -> ValueError:
    close = difflib.get_close_matches(key, list(allowed), n=1)
    hint = f"; did you mean '{close[0]}'?" if close else f" (allowed: {', '.join(sorted(allowed))})"
    return ValueError(f"{where}: unknown key '{key}'{hint}")


def _env(var: object, where: str, environ: Mapping[str, str]) -> str:
    value = environ.get(str(var))
    if value is None:
        raise ValueError(f"{where}: environment variable {var} is not set")
    return value


def parse_source(
    name: str,
    entry: Mapping[str, Any],
    *,
    base_dir: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> SourceConfig:
    """Check one entry of ``feature_sources`` and resolve its environment variables."""
    env = os.environ if environ is None else environ
    where = f"feature_sources.{name}"
    if not isinstance(entry, Mapping):
        raise ValueError(f"{where}: expected a mapping")
    kind = entry.get("type")
    if kind not in _KEYS:
        raise ValueError(f"{where}: type must be one of {', '.join(_KEYS)} (got {kind!r})")
    table = _KEYS[kind]
    options: dict[str, Any] = {}
    for key, value in entry.items():
        if key in _COMMON:
            continue
        if key.lower() in _SECRETS:
            raise ValueError(f"{where}.{key}: credentials come from the environment; use {key}_env")
        if key not in table:
            raise _unknown(key, set(table) | _COMMON, where)
        keyword, how = table[key]
        if how == "env":
            options[keyword] = _env(value, f"{where}.{key}", env)
        elif how == "duration":
            options[keyword] = parse_duration(value, f"{where}.{key}")
        elif how == "int":
            options[keyword] = int(value)
        elif how == "path":
            path = Path(str(value))
            options[keyword] = path if path.is_absolute() or base_dir is None else base_dir / path
        else:
            if key in ("url", "dsn") and urlparse(str(value)).password:
                raise ValueError(f"{where}.{key}: no password in the URL; use password_env or {key}_env")
            options[keyword] = str(value)
    missing = [k for k in _REQUIRED[kind] if k not in options]
    if missing:
        raise ValueError(f"{where}: missing {', '.join(missing)}")
    token = options.pop("token", None)
    if token is not None:
        options["headers"] = {"Authorization": f"Bearer {token}"}
    schema = None
    if entry.get("fields") is not None:
        schema = {str(k): DataType.parse(str(v)) for k, v in dict(entry["fields"]).items()}
    return SourceConfig(name, kind, options, schema, _parse_cache(entry.get("cache"), f"{where}.cache", env))


def _parse_cache(raw: object, where: str, env: Mapping[str, str]) -> CacheConfig | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: expected a mapping like {{ttl: 30s}}")
    for key in raw:
        if key not in _CACHE_KEYS:
            raise _unknown(str(key), _CACHE_KEYS, where)
    if "ttl" not in raw:
        raise ValueError(f"{where}: missing ttl")
    url = _env(raw["redis_url_env"], f"{where}.redis_url_env", env) if "redis_url_env" in raw else None
    url = url or raw.get("redis_url")
    backend = str(raw.get("backend", "memory"))
    if backend not in ("memory", "redis"):
        raise ValueError(f"{where}.backend: expected memory or redis, got '{backend}'")
    max_entries = raw.get("max_entries", DEFAULT_MAX_ENTRIES)
    if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1:
        raise ValueError(f"{where}.max_entries: expected a whole number of at least 1, got {max_entries!r}")
    return CacheConfig(parse_duration(raw["ttl"], f"{where}.ttl"), backend, url, max_entries)


def build_source(config: SourceConfig) -> FeatureSource:
    """The source ``config`` describes, wrapped in its cache when it has one."""
    constructors: dict[str, Callable[..., FeatureSource]] = {
        "redis": RedisSource,
        "postgres": PostgresSource,
        "http": HttpSource,
        "static": StaticSource,
    }
    source: FeatureSource = constructors[config.type](config.name, schema=config.schema, **config.options)
    if config.cache is not None:
        source = CachedSource(
            source,
            ttl_s=config.cache.ttl_s,
            backend=config.cache.backend,
            redis_url=config.cache.redis_url,
            max_entries=config.cache.max_entries,
        )
    return source


def sources_from_config(
    mapping: Mapping[str, Any] | None,
    *,
    base_dir: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, FeatureSource]:
    """Every source of a ``feature_sources`` mapping, by name; all checked before any is built."""
    configs = [
        parse_source(str(n), e, base_dir=base_dir, environ=environ) for n, e in (mapping or {}).items()
    ]
    built: dict[str, FeatureSource] = {}
    for c in configs:
        try:
            built[c.name] = build_source(c)
        except OSError as exc:  # a static file that is missing or unreadable
            raise ValueError(
                f"feature_sources.{c.name}: {exc.strerror or exc}: {exc.filename or ''}"
            ) from None
    return built


class FeatureCatalog:
    """The server's feature sources by name (``engine.interfaces.FeatureCatalog``).

    ``cached(name, ttl_s)`` puts an in-memory TTL cache in front of a source for graph nodes
    that ask for one (``cache: {ttl: 30s}``); nodes with the same source and ttl share one
    cache, across graph versions, so a reload does not start cold. ``close`` closes every
    source and cache once, at server shutdown.
    """

    def __init__(self, sources: Mapping[str, FeatureSource] | None = None) -> None:
        self._sources = dict(sources or {})
        self._cached: dict[tuple[str, float], CachedSource] = {}

    @classmethod
    def from_config(
        cls,
        mapping: Mapping[str, Any] | None,
        *,
        base_dir: Path | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> FeatureCatalog:
        return cls(sources_from_config(mapping, base_dir=base_dir, environ=environ))

    def __len__(self) -> int:
        return len(self._sources)

    def get(self, name: str) -> FeatureSource | None:
        return self._sources.get(name)

    def names(self) -> list[str]:
        return list(self._sources)

    def cached(self, name: str, ttl_s: float) -> FeatureSource:
        key = (name, float(ttl_s))
        found = self._cached.get(key)
        if found is None:
            found = self._cached[key] = CachedSource(
                self._sources[name],
                ttl_s=ttl_s,
                namespace=f"engine-node-cache:{name}:{ttl_s:g}",
                owns_source=False,
            )
        return found

    async def warm(self, timeout_s: float = WARM_TIMEOUT_S) -> dict[str, str]:
        """Connect every source that can (``warm()``), concurrently, within ``timeout_s``.

        Start-up calls it so the first requests do not pay a store's connection set-up (often
        more than a node's timeout). A store that is down or slow is only logged: its health never
        decides whether a graph serves. Returns each source's outcome: ok, failed or timed out."""
        warmers = {n: getattr(s, "warm", None) for n, s in self._sources.items()}
        tasks = {name: asyncio.ensure_future(warm()) for name, warm in warmers.items() if callable(warm)}
        if not tasks:
            return {}
        _, pending = await asyncio.wait(tasks.values(), timeout=timeout_s)
        outcome: dict[str, str] = {}
        for name, task in tasks.items():
            if task in pending:
                task.cancel()
                outcome[name] = "timed out"
            elif task.exception() is not None:
                outcome[name] = "failed"
                log.warning("feature source %s: not connected at start-up: %s", name, task.exception())
            else:
                outcome[name] = "ok"
        log.info("feature sources warmed: %s", ", ".join(f"{n} {o}" for n, o in sorted(outcome.items())))
        return outcome

    async def close(self) -> None:
        """Close every cache and source; a failing close is skipped so the others still close."""
        for source in [*self._cached.values(), *self._sources.values()]:
            with contextlib.suppress(Exception):  # shutdown is best effort
                await source.close()
        self._cached.clear()
