"""Feature-fetch adapters: online stores behind the kernel's ``FeatureSource`` interface."""

from adapters.cache import CachedSource
from adapters.http import HttpSource
from adapters.postgres import PostgresSource
from adapters.redis import RedisSource
from adapters.registry import SourceConfig, build_source, parse_source, sources_from_config
from adapters.static import StaticSource

__all__ = [
    "CachedSource",
    "HttpSource",
    "PostgresSource",
    "RedisSource",
    "SourceConfig",
    "StaticSource",
    "build_source",
    "parse_source",
    "sources_from_config",
]
