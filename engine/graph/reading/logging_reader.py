"""The ``logging:`` key of a graph file -> a ``LoggingPolicy``.

``read_logging`` checks keys ("did you mean" for unknown ones), types, ranges and the
syntax of ``redact``/``hash`` references, reporting into the graph's ``Report`` with
file:line:col like every other reader. Whether the references name real inputs, outputs
and node tensors is checked later (``engine.graph.checking.logging_checks``), once every
node's outputs are known.
"""

from __future__ import annotations

import os
from typing import Any

from engine.graph.reading.reader import Reader, describe
from engine.graph.values.diagnostics import did_you_mean, one_of
from engine.graph.values.logging_policy import (
    ALWAYS_ON,
    DEFAULT_MAX_TENSOR_ELEMENTS,
    HASH_KEY_ENV,
    OFF,
    FieldRef,
    LoggingPolicy,
)
from engine.graph.values.spec import OutputSpec

LOGGING_KEYS = ("sample", "always_on", "nodes", "redact", "hash", "max_tensor_elements")


def read_logging(reader: Reader, raw: Any, outputs: list[OutputSpec]) -> LoggingPolicy:
    """The policy written under ``logging:`` (``OFF`` when absent or unusable)."""
    if raw is None:
        return OFF
    top = reader.mapping(raw, ("logging",), "'logging'")
    if top is None:
        return OFF
    reader.check_keys(top, ("logging",), LOGGING_KEYS, "'logging'")
    at = reader.at
    sample = 0.0
    if "sample" in top:
        value = top["sample"]
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
            reader.error(
                at.value(("logging", "sample")),
                f"'sample' must be a number from 0 to 1 (0.1: one request in ten), got {describe(value)}",
            )
        else:
            sample = float(value)
    always_on: set[str] = set()
    for i, item in enumerate(_list(reader, top, "always_on")):
        if item in ALWAYS_ON:
            always_on.add(item)
        else:
            hint = did_you_mean(str(item), ALWAYS_ON) or f" (expected {one_of(ALWAYS_ON)})"
            reader.error(at.value(("logging", "always_on", i)), f"unknown always_on value '{item}'{hint}")
    nodes = False
    if "nodes" in top:
        if isinstance(top["nodes"], bool):
            nodes = top["nodes"]
        else:
            reader.error(
                at.value(("logging", "nodes")),
                f"'nodes' must be true or false, got {describe(top['nodes'])}",
            )
    limit = DEFAULT_MAX_TENSOR_ELEMENTS
    if "max_tensor_elements" in top:
        value = top["max_tensor_elements"]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            reader.error(
                at.value(("logging", "max_tensor_elements")),
                f"'max_tensor_elements' must be a positive whole number, got {describe(value)}",
            )
        else:
            limit = value
    refs: list[FieldRef] = []
    chosen: dict[str, set[str]] = {"redact": set(), "hash": set()}
    for key in ("redact", "hash"):
        for i, item in enumerate(_list(reader, top, key)):
            pos = at.text(("logging", key, i))
            if not isinstance(item, str) or item.count(".") < 1 or item.startswith(".") or item.endswith("."):
                reader.error(
                    pos,
                    f"'{key}' entries are inputs.NAME, outputs.NAME or NODE.TENSOR, got {describe(item)}",
                )
                continue
            other = "hash" if key == "redact" else "redact"
            if item in chosen[other]:
                reader.error(pos, f"'{item}' is both redacted and hashed; choose one")
                continue
            refs.append(FieldRef(item, pos))
            chosen[key].add(item)
    if chosen["hash"] and not os.environ.get(HASH_KEY_ENV):
        reader.error(
            at.key(("logging", "hash")),
            f"'hash' needs a secret key: set the environment variable {HASH_KEY_ENV} "
            "(values are never hashed unsalted)",
        )
    served = {o.ref.text: o.name for o in outputs}
    return LoggingPolicy(
        sample=sample,
        always_on=frozenset(always_on),
        nodes=nodes,
        redact=frozenset(_with_aliases(chosen["redact"], served)),
        hash=frozenset(_with_aliases(chosen["hash"], served)),
        max_tensor_elements=limit,
        refs=tuple(refs),
    )


def _with_aliases(paths: set[str], served: dict[str, str]) -> set[str]:
    """``node.tensor`` also hides the graph outputs that serve it (and ``outputs.y`` its node tensor)."""
    out = set(paths)
    for text, name in served.items():
        bare = "." not in text  # ``score: model`` serves the node's only output
        if text in paths or (bare and any(p.startswith(text + ".") for p in paths)):
            out.add(f"outputs.{name}")
        if f"outputs.{name}" in paths:
            out.add(f"{text}.*" if bare else text)
    return out


def _list(reader: Reader, top: dict[str, Any], key: str) -> list[Any]:
    if key not in top:
        return []
    value = top[key]
    if not isinstance(value, list):
        reader.error(reader.at.value(("logging", key)), f"'{key}' must be a list, got {describe(value)}")
        return []
    return value
