"""``batching:`` on a model node -> a ``BatchingSpec``.

```yaml
ranker:
  model: ranker.onnx
  inputs: {x: x}
  batching: {max_batch_size: 64, max_queue_delay: 2ms, preferred_batch_sizes: [16, 32]}
```

Checked here: the keys (unknown ones get "did you mean"), ``max_batch_size`` a whole number
from 1 to ``MAX_BATCH_SIZE``, ``max_queue_delay`` a duration written as ``timeout:`` is (zero
allowed: only requests that arrive together share a batch), ``preferred_batch_sizes`` whole
numbers from 1 to ``max_batch_size``. Whether the model itself can batch (a dynamic first
dimension on every input and output) is checked once it is loaded (``batch_dimension_problem``).
"""

from __future__ import annotations

from typing import Any

from engine.graph.reading.durations import EXAMPLES, seconds
from engine.graph.reading.reader import Reader
from engine.graph.reading.source import YamlPath
from engine.graph.values.spec import BatchingSpec
from engine.interfaces import ModelSignature

BATCHING_KEYS = ("max_batch_size", "max_queue_delay", "preferred_batch_sizes")
MAX_BATCH_SIZE = 65_536
DEFAULT_QUEUE_DELAY_S = 0.002


def _whole(value: Any, low: int, high: int) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        return None
    return value


def read_batching(r: Reader, value: Any, path: YamlPath) -> BatchingSpec | None:
    """The node's batching settings, or None after reporting what is wrong with them."""
    body = r.mapping(value, path, "'batching'")
    if body is None:
        return None
    r.check_keys(body, path, BATCHING_KEYS, "'batching'")
    if "max_batch_size" not in body:
        r.error(r.at.value(path), "'batching' needs 'max_batch_size' (the most rows one run may hold)")
        return None
    ok = True
    size_path = (*path, "max_batch_size")
    size = _whole(body["max_batch_size"], 1, MAX_BATCH_SIZE)
    if size is None:
        r.error(
            r.at.value(size_path),
            f"'max_batch_size' must be a whole number from 1 to {MAX_BATCH_SIZE:,}, "
            f"got {body['max_batch_size']!r}",
        )
        ok, size = False, MAX_BATCH_SIZE
    delay = DEFAULT_QUEUE_DELAY_S
    if "max_queue_delay" in body:
        raw = body["max_queue_delay"]
        parsed = seconds(raw)
        if parsed is None:
            r.error(
                r.at.value((*path, "max_queue_delay")),
                f"'max_queue_delay' must be a duration such as {EXAMPLES} (0 allowed), got {raw!r}",
            )
            ok = False
        else:
            delay = parsed
    preferred: list[int] = []
    if "preferred_batch_sizes" in body:
        raw = body["preferred_batch_sizes"]
        ppath = (*path, "preferred_batch_sizes")
        if not isinstance(raw, list):
            r.error(r.at.value(ppath), f"'preferred_batch_sizes' must be a list of row counts, got {raw!r}")
            ok = False
            raw = []
        for i, item in enumerate(raw):
            number = _whole(item, 1, size)
            if number is None:
                r.error(
                    r.at.value((*ppath, i)),
                    f"a preferred batch size must be a whole number from 1 to max_batch_size ({size}), "
                    f"got {item!r}",
                )
                ok = False
            elif number not in preferred:
                preferred.append(number)
    if not ok:
        return None
    return BatchingSpec(size, delay, tuple(sorted(preferred)), r.at.value(size_path))


def batch_dimension_problem(signature: ModelSignature) -> str | None:
    """Why a model cannot batch (None when it can): every input and output needs a dynamic
    (-1) first dimension, so requests' rows can be stacked along it and split back."""
    for role, tensors in (("input", signature.inputs), ("output", signature.outputs)):
        for tensor in tensors:
            if not tensor.shape:
                return f"its {role} '{tensor.name}' is a scalar, with no batch dimension"
            if tensor.shape[0] != -1:
                return f"its {role} '{tensor.name}' has a fixed first dimension of {tensor.shape[0]}"
    return None
