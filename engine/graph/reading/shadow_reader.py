"""A ``shadow:`` node's YAML -> ``ShadowNode``.

.. code-block:: yaml

    deep_v2:
      shadow: deep                      # the live model node it mirrors
      model: deep_v2.onnx               # the candidate, fed exactly deep's inputs
      compare: {prob: {abs_tol: 0.05}}  # per output (engine.shadow.rules)
      sample: 0.5                       # share of requests mirrored
      timeout: 50ms                     # bound on one candidate run (default 1s)

The target, the candidate's signature and the compared outputs are checked later
(``engine.graph.checking.shadow_checks``), once models are loaded.
"""

from __future__ import annotations

from typing import Any

from engine.graph.reading.model_pin import MODEL_WHAT, read_pin
from engine.graph.reading.reader import Reader
from engine.graph.reading.source import YamlPath
from engine.graph.values.diagnostics import Pos
from engine.graph.values.spec import NodeCommon, ShadowNode, ShadowOf
from engine.shadow.rules import rule_problems

SHADOW_KEYS = ("model", "compare", "sample", "threads", "sha256")
DEFAULT_TIMEOUT_S = 1.0
"""A shadow's bound on one candidate run when it gives no ``timeout``."""


def read_shadow(
    reader: Reader, common: NodeCommon, body: dict[str, Any], path: YamlPath
) -> ShadowNode | None:
    r = reader
    where = f"shadow node '{common.name}'"
    target = r.text(body["shadow"], (*path, "shadow"), "'shadow' (the name of the live node it mirrors)")
    if "on_error" in body:
        r.error(
            r.at.key((*path, "on_error")),
            f"{where}: 'on_error' does not apply; a shadow never fails or changes the response "
            "(its errors and timeouts are counted)",
        )
    if "model" not in body:
        r.error(common.pos, f"{where} needs 'model' (the candidate model file, fed the target's inputs)")
        return None
    file = r.text(body["model"], (*path, "model"), MODEL_WHAT)
    pin = read_pin(r, body, path)
    sample = _sample(r, body, path)
    threads = body.get("threads", 1)
    if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= 256:
        r.error(
            r.at.value((*path, "threads")), f"'threads' must be a whole number from 1 to 256, got {threads!r}"
        )
        threads = 1
    compare, compare_pos = compare_rules(r, body, path, None, where)
    if target is None or file is None:
        return None
    return ShadowNode(
        common,
        target,
        r.at.text((*path, "shadow")),
        file,
        r.at.text((*path, "model")),
        compare=compare,
        compare_pos=compare_pos,
        sample=sample,
        threads=threads,
        sha256=pin,
    )


SHADOW_OF_KEYS = ("graph", "sample", "timeout", "compare")


def read_shadow_of(reader: Reader, raw: Any, outputs: list[str]) -> ShadowOf | None:
    """``shadow_of: GRAPH`` or ``shadow_of: {graph: GRAPH, sample:, timeout:, compare:}``.

    The compared outputs must be this graph's (the live graph's are matched by name at run time)."""
    r = reader
    path: YamlPath = ("shadow_of",)
    body = (
        {"graph": raw}
        if isinstance(raw, str)
        else r.mapping(raw, path, "'shadow_of' (a graph name, or {graph: ...})")
    )
    if body is None:
        return None
    if not isinstance(raw, str):
        r.check_keys(body, path, SHADOW_OF_KEYS, "'shadow_of'")
    graph = r.text(
        body.get("graph"), (*path, "graph") if not isinstance(raw, str) else path, "'shadow_of' graph"
    )
    sample = _sample(r, body, path)
    timeout = DEFAULT_TIMEOUT_S
    if "timeout" in body:
        timeout = r.duration(body["timeout"], (*path, "timeout"), "'timeout'") or DEFAULT_TIMEOUT_S
    compare, compare_pos = compare_rules(r, body, path, outputs, "shadow_of")
    if graph is None:
        return None
    return ShadowOf(graph, sample, timeout, compare, compare_pos, r.at.key(path))


def _sample(r: Reader, body: dict[str, Any], path: YamlPath) -> float:
    """``sample:``, a share of requests in (0, 1]; 1 when absent (or after reporting a bad one)."""
    sample = body.get("sample", 1.0)
    if isinstance(sample, bool) or not isinstance(sample, int | float) or not 0.0 < sample <= 1.0:
        r.error(
            r.at.value((*path, "sample")),
            f"'sample' must be a share of requests greater than 0 and at most 1 (e.g. 0.1), got {sample!r}",
        )
        return 1.0
    return float(sample)


def compare_rules(
    r: Reader, body: dict[str, Any], path: YamlPath, outputs: list[str] | None, where: str
) -> tuple[dict[str, Any], dict[str, Pos]]:
    """``compare:`` as plain data with each output key's position; every rule problem reported."""
    cpath = (*path, "compare")
    compare = body.get("compare") or {}
    if not isinstance(compare, dict):
        r.error(r.at.value(cpath), "'compare' must map output names to rules, e.g. {prob: {abs_tol: 0.05}}")
        return {}, {}
    for key_path, message in rule_problems(compare, outputs):
        r.error(r.at.key((*cpath, *key_path)) if key_path else r.at.value(cpath), f"{where}: {message}")
    return dict(compare), {str(name): r.at.key((*cpath, name)) for name in compare}
