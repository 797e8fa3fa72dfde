"""Check a ``features:`` node against its key tensor and the server's feature sources.

The key must be one value per row (``[-1]`` or ``[-1, 1]``) of text (BYTES) or
integers. The source must be declared in the server config; when it declares
its fields (``fields:`` in ``feature_sources``), each wanted field must be one of
them, with a datatype of the same family (text, boolean or number). Each field
becomes one output ``[batch, 1]`` of its declared datatype.
"""

from __future__ import annotations

from engine.graph.checking.scope import NodeResult, Scope
from engine.graph.values.diagnostics import did_you_mean
from engine.graph.values.spec import FeatureNode
from engine.interfaces import FeatureSource
from engine.tensors import DataType, TensorSpec


def _family(datatype: DataType) -> str:
    if datatype is DataType.BYTES:
        return "text"
    if datatype is DataType.BOOL:
        return "boolean"
    return "numeric"


def check_features(scope: Scope, node: FeatureNode) -> NodeResult | None:
    report = scope.report
    name = node.common.name
    resolved = scope.resolve(node.key.text, node.key.pos)
    source = _source(scope, node)
    if resolved is None:
        return None
    slot, key = resolved
    ok = True
    if key.datatype is not DataType.BYTES and (key.datatype.is_float or key.datatype is DataType.BOOL):
        report.error(
            node.key.pos,
            f"features node '{name}': key '{node.key.text}' is {key.datatype.value}; a key is text (BYTES) "
            "or a whole number (INT32, INT64, …)",
        )
        ok = False
    if not (len(key.shape) == 1 or (len(key.shape) == 2 and key.shape[1] == 1)):
        report.error(
            node.key.pos,
            f"features node '{name}': key '{node.key.text}' has shape {key.shape_text()}; "
            "it must hold one key per row: [-1] or [-1, 1]",
        )
        ok = False
    if source is None or not ok:
        return None
    if node.common.timeout_s is None:
        report.warning(
            node.common.pos,
            f"features node '{name}' has no 'timeout': a stalled store holds each request until its "
            "deadline (add e.g. timeout: 20ms)",
        )
    batch = key.shape[0]
    outputs = tuple(TensorSpec(f.name, f.datatype, (batch, 1)) for f in node.fields)
    fields = ", ".join(f.name for f in node.fields)
    return NodeResult(
        node=node,
        reads=(slot,),
        outputs=outputs,
        detail=f"{node.source}: {fields}",
        shown_inputs=(slot,),
        source=source,
    )


def _source(scope: Scope, node: FeatureNode) -> FeatureSource | None:
    """The source to read (behind the node's cache when it has one), after checking the fields."""
    report = scope.report
    name = node.common.name
    catalog = scope.features
    found = catalog.get(node.source) if catalog is not None else None
    if catalog is None or found is None:
        names = list(catalog.names()) if catalog is not None else []
        if names:
            hint = did_you_mean(node.source, names) or f" (declared: {', '.join(sorted(names))})"
        else:
            hint = " (no feature sources are declared: add them under feature_sources in engine.yaml)"
        report.error(
            node.common.kind_pos, f"features node '{name}': unknown feature source '{node.source}'{hint}"
        )
        return None
    schema = found.schema()
    ok = True
    if schema is not None:
        for field in node.fields:
            declared = schema.get(field.name)
            if declared is None:
                hint = did_you_mean(field.name, list(schema)) or f" (its fields: {', '.join(schema)})"
                report.error(field.pos, f"feature source '{node.source}' has no field '{field.name}'{hint}")
                ok = False
            elif _family(declared) != _family(field.datatype):
                report.error(
                    field.pos,
                    f"field '{field.name}' is {declared.value} in source '{node.source}' but "
                    f"{field.datatype.value} here; {_family(declared)} values cannot be read as "
                    f"{_family(field.datatype)}",
                )
                ok = False
    if not ok:
        return None
    if node.cache_ttl_s is not None:
        return catalog.cached(node.source, node.cache_ttl_s)
    return found
