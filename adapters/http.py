"""A JSON feature service over HTTP; the first dialect is Feast's ``get-online-features``.

Request (one per batch)::

    POST {url}/get-online-features
    {"features": ["user_stats:age_days", ...], "entities": {"user_id": ["1", "2"]}}

Response: one result per feature name, column-wise, rows aligned with the entities::

    {"metadata": {"feature_names": ["user_id", "age_days", ...]},
     "results": [{"values": [...], "statuses": ["PRESENT", "NOT_FOUND", ...],
                  "event_timestamps": ["2024-05-01T12:00:00Z", ...]}, ...]}

Feast statuses map to ours: PRESENT → PRESENT, NOT_FOUND / NULL_VALUE → MISSING,
OUTSIDE_MAX_AGE → STALE, anything else → FAILED. A feature the response lacks is
MISSING. The client is one pooled ``httpx.AsyncClient`` (keep-alive connections).
Transport errors and non-2xx answers raise ``DependencyUnavailable``.

Each request carries the trace context of the inference call it serves (W3C ``traceparent``,
and ``tracestate``/``baggage`` when set, through OpenTelemetry's configured propagator), so the
feature service's own spans join the caller's trace; with tracing off nothing is added.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import httpx
import numpy as np
from opentelemetry import propagate

from adapters.base import (
    FAILED,
    MISSING,
    PRESENT,
    STALE,
    BatchBuilder,
    check_fields,
    is_stale,
    key_text,
    unavailable,
)
from engine.interfaces import FeatureBatch, FeatureField
from engine.tensors import DataType

FEAST_STATUSES: dict[str, np.uint8] = {
    "PRESENT": PRESENT,
    "NOT_FOUND": MISSING,
    "NULL_VALUE": MISSING,
    "OUTSIDE_MAX_AGE": STALE,
}


class HttpSource:
    """A ``FeatureSource`` over a Feast-compatible feature server."""

    def __init__(
        self,
        name: str,
        url: str,
        *,
        feature_view: str,
        entity_key: str = "key",
        key_type: str = "str",
        timeout_s: float = 1.0,
        pool_size: int = 32,
        headers: Mapping[str, str] | None = None,
        schema: Mapping[str, DataType] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if key_type not in ("str", "int"):
            raise ValueError(f"key_type must be 'str' or 'int', got '{key_type}'")
        self.name = name
        self.url = url.rstrip("/") + "/get-online-features"
        self.feature_view = feature_view
        self.entity_key = entity_key
        self.key_type = key_type
        self._schema = dict(schema) if schema is not None else None
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s),
            limits=httpx.Limits(max_connections=pool_size, max_keepalive_connections=pool_size),
            headers=dict(headers or {}),
            transport=transport,
        )

    def __repr__(self) -> str:
        return f"HttpSource({self.name!r}, {self.url!r}, feature_view={self.feature_view!r})"

    def schema(self) -> Mapping[str, DataType] | None:
        return self._schema

    def request_body(self, keys: Sequence[object], fields: Sequence[FeatureField]) -> dict[str, object]:
        texts = [key_text(k) for k in keys]
        entities: list[object] = list(texts)
        if self.key_type == "int":
            entities = [int(t) if t.lstrip("-").isdigit() else t for t in texts]
        return {
            "features": [f"{self.feature_view}:{f.name}" for f in fields],
            "entities": {self.entity_key: entities},
        }

    async def fetch(
        self, keys: Sequence[str], fields: Sequence[FeatureField], *, max_age_s: float | None = None
    ) -> FeatureBatch:
        check_fields(fields)
        builder = BatchBuilder(len(keys), fields)
        if not keys or not fields:
            return builder.build()
        trace_headers: dict[str, str] = {}
        propagate.inject(trace_headers)  # the current span's context: the request being served
        try:
            response = await self._client.post(
                self.url, json=self.request_body(keys, fields), headers=trace_headers or None
            )
        except httpx.TimeoutException as exc:
            raise unavailable(self.name, "HTTP store timed out", exc) from exc
        except (httpx.ConnectError, httpx.NetworkError) as exc:
            raise unavailable(self.name, "HTTP store unreachable", exc) from exc
        except httpx.HTTPError as exc:
            raise unavailable(self.name, "HTTP request failed", exc) from exc
        if response.status_code >= 300:
            raise unavailable(
                self.name, f"store answered HTTP {response.status_code}", detail=response.text[:200]
            )
        try:
            body = response.json()
            names = body["metadata"]["feature_names"]
            results = body["results"]
        except (ValueError, KeyError, TypeError) as exc:
            raise unavailable(self.name, "malformed response", exc) from exc
        columns = {_bare(str(n), self.feature_view): r for n, r in zip(names, results, strict=False)}
        for col, f in enumerate(fields):
            result = columns.get(f.name)
            if isinstance(result, dict):
                self._fill_column(builder, col, result, len(keys), max_age_s)
        return builder.build()

    @staticmethod
    def _fill_column(
        builder: BatchBuilder, col: int, result: dict[str, Any], n: int, max_age_s: float | None
    ) -> None:
        values = result.get("values") or []
        statuses = result.get("statuses") or ["PRESENT"] * len(values)
        stamps = result.get("event_timestamps") or []
        for row in range(min(n, len(values))):
            status = FEAST_STATUSES.get(str(statuses[row]) if row < len(statuses) else "", FAILED)
            stamp = stamps[row] if row < len(stamps) else None
            if (
                status == PRESENT
                and max_age_s is not None
                and stamp is not None
                and is_stale(stamp, max_age_s)
            ):
                status = STALE
            if status == PRESENT:
                builder.put(row, col, values[row])
            else:
                builder.status[row, col] = status

    async def warm(self) -> None:
        """Open a kept-alive connection to the store now (start-up): any answer will do."""
        await self._client.request("OPTIONS", self.url)

    async def close(self) -> None:
        await self._client.aclose()


def _bare(name: str, view: str) -> str:
    """``view:field`` or ``view__field`` (Feast's full_feature_names) → ``field``."""
    for sep in (":", "__"):
        prefix = view + sep
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name
