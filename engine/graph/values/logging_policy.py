"""A graph's request-log policy (the ``logging:`` key), as a frozen value.

``LoggingPolicy`` says which requests the request log records and how: the sampled share,
the outcomes always recorded, whether node outputs are kept, and which fields are redacted
or hashed. It is read by ``engine.graph.reading.logging_reader``, its references are checked
by ``engine.graph.checking.logging_checks``, and ``engine.graph.compiling.redactions`` extends
its redaction over the compiled nodes.

A policy is compiled once per graph version; per request only ``should_log``
runs (one comparison and, when sampling, one random draw).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from engine.graph.values.diagnostics import Pos

ALWAYS_ON = ("error", "shadow_disagreement")
"""The outcomes ``always_on`` may name: requests with them are recorded whatever the sample."""
HASH_KEY_ENV = "ENGINE_LOG_HASH_KEY"
"""The environment variable holding the secret that salts hashed fields."""
DEFAULT_MAX_TENSOR_ELEMENTS = 1024


@dataclass(frozen=True, slots=True)
class FieldRef:
    """One ``redact``/``hash`` entry as written: ``inputs.x``, ``outputs.y`` or ``node.tensor``."""

    text: str
    pos: Pos


@dataclass(frozen=True, slots=True)
class LoggingPolicy:
    """A graph's request-log policy; the default logs nothing.

    ``redact`` and ``hash`` hold record paths (``inputs.x``, ``outputs.y``,
    ``node.tensor``); a node output that a graph output serves is listed under
    both names, so it is hidden wherever it would appear.
    """

    sample: float = 0.0
    always_on: frozenset[str] = frozenset()
    nodes: bool = False
    redact: frozenset[str] = frozenset()
    hash: frozenset[str] = frozenset()
    max_tensor_elements: int = DEFAULT_MAX_TENSOR_ELEMENTS
    refs: tuple[FieldRef, ...] = ()  # every redact/hash entry with its position, for validation

    @property
    def enabled(self) -> bool:
        """Whether any request of this graph can be logged."""
        return self.sample > 0.0 or bool(self.always_on)

    def should_log(self, ok: bool, *, draw: float | None = None) -> str | None:
        """Why this request is logged (``"error"``, ``"sample"``), or None to skip it.

        ``draw`` is a uniform number in [0, 1); by default a fresh ``random.random()``.
        """
        if not ok and "error" in self.always_on:
            return "error"
        if self.sample <= 0.0:
            return None
        if self.sample >= 1.0:
            return "sample"
        return "sample" if (random.random() if draw is None else draw) < self.sample else None


OFF = LoggingPolicy()
