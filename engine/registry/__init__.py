"""Model sources other than the graph folder: an MLflow registry and pinned https URLs.

``ModelSources`` (``sources.py``) fulfils ``engine.interfaces.ModelSource``; the server builds it from
the ``model_registry`` and ``model_cache`` settings and hands it to the repository. Downloads land in
one content-addressed cache (``cache.py``), checked against their digest before anything loads them.
"""

from engine.registry.cache import ModelCache
from engine.registry.references import RegistryReference, parse_registry_reference
from engine.registry.sources import ModelSources

__all__ = ["ModelCache", "ModelSources", "RegistryReference", "parse_registry_reference"]
