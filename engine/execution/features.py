"""Running a ``FeatureStep``: keys out of a tensor, a bounded fetch, outputs and statuses back.

The fetch is bounded by the node's ``timeout`` and what is left of the request's
deadline. When the node's own timeout (not the request's deadline) cuts it off,
or the store cannot be reached, a node with ``on_error: default`` gives every
value its field's default with status TIMED_OUT or FAILED; otherwise the request
fails with UNAVAILABLE naming the node and the source. The request running out
of time is always DEADLINE_EXCEEDED.
"""

from __future__ import annotations

import asyncio
import logging
import time

import numpy as np

from engine.errors import DeadlineExceeded, DependencyUnavailable, EngineError, InternalError
from engine.graph.values.plan import FeatureStep
from engine.interfaces import FeatureBatch, FeatureField, FeatureStatus
from engine.tensors import DataType

log = logging.getLogger("engine.features")


def feature_keys(array: np.ndarray) -> list[str]:
    """One text key per row of a ``[n]`` or ``[n, 1]`` key tensor (BYTES or integers)."""
    flat = array.reshape(-1).tolist()
    if array.dtype == np.object_:
        return [k.decode("utf-8", "replace") if isinstance(k, bytes) else str(k) for k in flat]
    return [str(k) for k in flat]


def default_batch(fields: tuple[FeatureField, ...], n: int, status: FeatureStatus) -> FeatureBatch:
    """Every value at its field's default, every status ``status``."""
    values: dict[str, np.ndarray] = {}
    for field in fields:
        if field.datatype is DataType.BYTES:
            column = np.empty(n, dtype=np.object_)
            default = field.default
            column[:] = default.encode("utf-8") if isinstance(default, str) else default
        else:
            column = np.full(n, field.default, dtype=field.datatype.numpy_dtype)
        values[field.name] = column
    return FeatureBatch(values, np.full((n, len(fields)), int(status), dtype=np.uint8))


async def fetch_features(
    step: FeatureStep, key_tensor: np.ndarray, deadline: float | None, *, store: bool = True
) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    """The step's outputs (``[n, 1]`` per field) and the ``[n, fields]`` uint8 status array.

    ``store=False``: every value is its field's default, status ``missing``, and the source
    is not asked (the load-time warm-up)."""
    keys = feature_keys(key_tensor)
    n = len(keys)
    if not store:
        batch = default_batch(step.fields, n, FeatureStatus.MISSING)
        return tuple(batch.values[f.name].reshape(n, 1) for f in step.fields), batch.status
    budget = step.timeout_s
    by_node = True
    if deadline is not None:
        left = deadline - time.monotonic()
        if budget is None or left < budget:
            budget, by_node = left, False
    try:
        if budget is None:
            batch = await step.source.fetch(keys, step.fields, max_age_s=step.max_age_s)
        else:
            async with asyncio.timeout(budget):
                batch = await step.source.fetch(keys, step.fields, max_age_s=step.max_age_s)
    except TimeoutError:
        if not by_node:
            raise DeadlineExceeded(
                f"request deadline exceeded while node '{step.name}' was fetching features from "
                f"'{step.source_name}'",
                node=step.name,
            ) from None
        if not step.use_defaults:
            assert step.timeout_s is not None
            raise DependencyUnavailable(
                f"node '{step.name}': feature source '{step.source_name}' did not answer within its "
                f"timeout of {step.timeout_s * 1000:g} ms",
                node=step.name,
            ) from None
        batch = default_batch(step.fields, n, FeatureStatus.TIMED_OUT)
    except DependencyUnavailable as exc:
        if not step.use_defaults:
            raise DependencyUnavailable(f"node '{step.name}': {exc.message}", node=step.name) from exc
        batch = default_batch(step.fields, n, FeatureStatus.FAILED)
    except EngineError:
        raise
    except Exception as exc:  # an adapter bug: defaults when allowed, else our INTERNAL
        log.warning("features node %s: source %s raised %r", step.name, step.source_name, exc)
        if not step.use_defaults:
            raise InternalError(
                f"node '{step.name}': feature source '{step.source_name}' failed: {type(exc).__name__}",
                node=step.name,
            ) from exc
        batch = default_batch(step.fields, n, FeatureStatus.FAILED)
    outs = tuple(batch.values[f.name].reshape(n, 1) for f in step.fields)
    return outs, batch.status
