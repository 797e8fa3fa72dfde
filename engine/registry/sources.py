"""``ModelSources``: the engine's ``ModelSource``, one per server, built from its settings.

    model_registry: {mlflow: {tracking_uri: http://mlflow:5000, timeout_s: 10}}
    model_cache: /var/cache/graph-engine/models

``models:/…`` references go to the MLflow registry (an error when none is configured), ``https://``
URLs are fetched directly; both land in the ``ModelCache`` and are verified there. What an immutable
reference (a registry version, a pinned URL) was found to be is remembered in the cache, so a
restart or another worker loads it from disk without asking the registry.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from engine.interfaces import ModelArtifact
from engine.registry import pinned_url
from engine.registry.cache import ModelCache, normalise_digest
from engine.registry.mlflow import MlflowRegistry, RegistryUnreachable
from engine.registry.references import PREFIX, RegistryReference, parse_registry_reference

log = logging.getLogger("engine.registry")

REGISTRY_KEYS = {"mlflow"}
MLFLOW_KEYS = {"tracking_uri", "timeout_s"}


class ModelSources:
    def __init__(
        self, cache: ModelCache, mlflow: MlflowRegistry | None = None, timeout_s: float = 30.0
    ) -> None:
        self.cache = cache
        self.mlflow = mlflow
        self._http = httpx.Client(timeout=timeout_s, follow_redirects=True)
        self._fetching = threading.Lock()  # one download at a time per process; others find it cached

    @classmethod
    def from_config(cls, registry: Mapping[str, Any], cache_dir: Path) -> ModelSources:
        """From the ``model_registry`` setting; ``ValueError`` naming the key that is wrong."""
        unknown = sorted(set(registry) - REGISTRY_KEYS)
        if unknown:
            raise ValueError(f"model_registry: unknown registry {unknown[0]!r} (known: mlflow)")
        mlflow = None
        if "mlflow" in registry:
            config = registry["mlflow"]
            if not isinstance(config, Mapping) or not config.get("tracking_uri"):
                raise ValueError("model_registry.mlflow needs tracking_uri")
            extra = sorted(set(config) - MLFLOW_KEYS)
            if extra:
                raise ValueError(
                    f"model_registry.mlflow: unknown key {extra[0]!r} (known: tracking_uri, timeout_s)"
                )
            mlflow = MlflowRegistry(
                str(config["tracking_uri"]), timeout_s=float(config.get("timeout_s", 10.0))
            )
        return cls(ModelCache(cache_dir), mlflow)

    def close(self) -> None:
        self._http.close()
        if self.mlflow is not None:
            self.mlflow.close()

    # -- ModelSource ---------------------------------------------------------------------------
    def identify(self, reference: str, sha256: str | None = None) -> str:
        if reference.startswith(PREFIX):
            ref = parse_registry_reference(reference)
            return self._exact(ref, self._registry(ref)).text
        pinned_url.check_url(reference, sha256)
        return f"{pinned_url.shown(reference)}#{sha256}"

    def fetch(self, reference: str, sha256: str | None = None) -> ModelArtifact:
        pin = normalise_digest(sha256) if sha256 else None
        if reference.startswith(PREFIX):
            return self._fetch_registered(reference, pin)
        pinned_url.check_url(reference, pin)
        assert pin is not None
        with self._fetching:
            path = self.cache.has(pin)
            if path is None:
                try:
                    _, path = self.cache.store(pinned_url.download(self._http, reference), expect=pin)
                except ValueError as exc:
                    raise ValueError(f"model URL '{pinned_url.shown(reference)}' {exc}") from exc
                log.info("fetched %s into the model cache (sha256 %s)", pinned_url.shown(reference), pin)
        return ModelArtifact(reference, pinned_url.shown(reference), path, pin)

    # -- the registry --------------------------------------------------------------------------
    def _registry(self, ref: RegistryReference) -> MlflowRegistry:
        if self.mlflow is None:
            raise ValueError(
                f"'{ref.text}' names a registry model but no registry is configured "
                "(model_registry: {mlflow: {tracking_uri: ...}} in engine.yaml)"
            )
        return self.mlflow

    def _exact(self, ref: RegistryReference, registry: MlflowRegistry) -> RegistryReference:
        """The immutable version ``ref`` names. An alias is asked of the registry; while the registry
        cannot be reached, the version it named when last asked, if that version is cached: so a
        restarted worker or pod serves what the others serve (said in the log) instead of nothing."""
        if not ref.alias:
            return ref
        key = f"mlflow|{registry.tracking_uri}|{ref.text}"
        try:
            version = registry.version_of(ref)
        except RegistryUnreachable:
            last = self.cache.recall(key)
            exact = ref.at(last) if last else None
            if exact is None or not self.cache.remembered(f"mlflow|{registry.tracking_uri}|{exact.text}"):
                raise
            log.warning(
                "model registry unreachable: %s is served as %s, what it named when last resolved",
                ref.text,
                exact.text,
            )
            return exact
        self.cache.note(key, version)
        return ref.at(version)

    def _fetch_registered(self, reference: str, pin: str | None) -> ModelArtifact:
        ref = parse_registry_reference(reference)
        registry = self._registry(ref)
        exact = self._exact(ref, registry)
        key = f"mlflow|{registry.tracking_uri}|{exact.text}"
        with self._fetching:
            digest = self.cache.remembered(key)
            path = self.cache.has(digest) if digest else None
            if digest is None or path is None:
                digest, path = self.cache.store(registry.download(exact))
                self.cache.remember(key, digest)
                log.info("fetched %s (%s) into the model cache (sha256 %s)", reference, exact.text, digest)
        if pin is not None and digest != pin:
            raise ValueError(
                f"registry model '{reference}' ({exact.text}) has sha256 {digest}, not the pinned {pin}"
            )
        return ModelArtifact(reference, exact.text, path, digest)
