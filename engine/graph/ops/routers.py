"""Routers: per-row branch choice for switch and split nodes, built once at load.

* switch: the ``when`` masks are evaluated in order; a row takes the first case
  whose mask is true, else the default. Masks may be shaped [N] or [N, 1].
* split with ``key``: each row's key is hashed (BLAKE2b, keyed with the split's
  node name, over the key's canonical text) to a point in [0, 1) and the arm
  whose cumulative weight band holds it is chosen, so a key always takes the
  same arm while the weights stay the same. Numbers hash by their decimal text,
  so the key 42 sent as INT32, INT64 or the BYTES "42" lands in the same arm.
* split without ``key``: each row draws from a ``numpy.random.Generator``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import numpy as np

from engine.graph.values.plan import Router

MaskFn = Callable[[Sequence[np.ndarray]], np.ndarray]
_SCALE = float(2**64)


def switch_router(conditions: Sequence[tuple[MaskFn, tuple[int, ...], int]], default: int) -> Router:
    """``conditions``: (mask function, indexes of its arrays among the router's inputs, branch)."""
    cases = tuple(conditions)

    def route(arrays: Sequence[np.ndarray]) -> np.ndarray:
        n = int(arrays[0].shape[0])
        chosen = np.full(n, default, dtype=np.intp)
        open_rows = np.ones(n, dtype=np.bool_)
        for mask_fn, picks, branch in cases:
            mask = np.asarray(mask_fn([arrays[i] for i in picks]), dtype=np.bool_).reshape(n)
            hit = open_rows & mask
            chosen[hit] = branch
            open_rows &= ~mask
            if not open_rows.any():
                break
        return chosen

    return route


def _bounds(weights: Sequence[float]) -> np.ndarray:
    total = float(sum(weights))
    return np.cumsum(np.asarray(weights, dtype=np.float64) / total)[:-1]


def key_text(value: object) -> bytes:
    """The canonical bytes of one key element (see the module docstring)."""
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, np.bool_ | bool):
        return b"true" if value else b"false"
    if isinstance(value, np.integer | int):
        return str(int(value)).encode()
    if isinstance(value, np.floating | float):
        f = float(value)
        return str(int(f)).encode() if f.is_integer() else repr(f).encode()
    return str(value).encode()


def key_buckets(keys: np.ndarray, salt: str) -> np.ndarray:
    """One point in [0, 1) per row: a stable hash of that row's key."""
    flat = keys[(slice(None),) + (0,) * (keys.ndim - 1)] if keys.ndim > 1 else keys  # [N, 1] -> [N]
    salt_bytes = salt.encode()[:64]
    out = np.empty(flat.shape[0], dtype=np.float64)
    for i, value in enumerate(flat.tolist() if flat.dtype != object else flat):
        digest = hashlib.blake2b(key_text(value), digest_size=8, key=salt_bytes).digest()
        out[i] = int.from_bytes(digest, "little") / _SCALE
    return out


def sticky_split_router(weights: Sequence[float], salt: str) -> Router:
    bounds = _bounds(weights)

    def route(arrays: Sequence[np.ndarray]) -> np.ndarray:
        points = key_buckets(arrays[0], salt)
        return np.searchsorted(bounds, points, side="right").astype(np.intp, copy=False)

    return route


def random_split_router(weights: Sequence[float], rng: np.random.Generator | None = None) -> Router:
    bounds = _bounds(weights)
    generator = rng if rng is not None else np.random.default_rng()

    def route(arrays: Sequence[np.ndarray]) -> np.ndarray:
        points = generator.random(int(arrays[0].shape[0]))
        return np.searchsorted(bounds, points, side="right").astype(np.intp, copy=False)

    return route
