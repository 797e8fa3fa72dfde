"""A ``features:`` node's YAML -> ``FeatureNode``.

.. code-block:: yaml

    user:
      features: users                 # a source declared in the server config
      key: inputs.user_id             # one key per row
      fields:
        account_age_days: {datatype: FP32, default: 0}
        country: {datatype: BYTES, default: "unknown"}
      max_age: 1h                     # older values count as absent (the default is used)
      cache: {ttl: 30s}               # per-node in-memory cache
      timeout: 20ms
      on_error: default               # or fail (UNAVAILABLE naming the node)

Whether the source exists and declares these fields is checked later, in
``engine.graph.checking.feature_checks``, against the server's catalog.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from engine.graph.reading.contract_reader import read_contract
from engine.graph.reading.reader import Reader
from engine.graph.reading.source import YamlPath
from engine.graph.values.spec import FeatureFieldSpec, FeatureNode, NodeCommon
from engine.tensors import DataType

FEATURE_KEYS = ("key", "fields", "max_age", "cache")
FIELD_KEYS = ("datatype", "default", "contract")
CACHE_KEYS = ("ttl",)
_FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def read_features(
    reader: Reader, common: NodeCommon, body: dict[str, Any], path: YamlPath
) -> FeatureNode | None:
    r = reader
    where = f"features node '{common.name}'"
    source = r.text(body["features"], (*path, "features"), "'features' (the name of a feature source)")
    if "key" not in body:
        r.error(common.pos, f"{where} needs 'key' (the entity key of each row, e.g. inputs.user_id)")
    key = r.ref(body["key"], (*path, "key"), "'key'") if "key" in body else None
    fields = _fields(r, body, path, where, common.name)
    max_age = r.duration(body["max_age"], (*path, "max_age"), "'max_age'") if "max_age" in body else None
    ttl: float | None = None
    if "cache" in body:
        cpath = (*path, "cache")
        cache = r.mapping(body["cache"], cpath, "'cache' (e.g. {ttl: 30s})")
        if cache is not None:
            r.check_keys(cache, cpath, CACHE_KEYS, "'cache'")
            if "ttl" in cache:
                ttl = r.duration(cache["ttl"], (*cpath, "ttl"), "cache 'ttl'")
            elif set(cache) <= set(CACHE_KEYS):  # otherwise a misspelt key was reported already
                r.error(r.at.value(cpath), "'cache' needs 'ttl' (how long a fetched row is reused, e.g. 30s)")
    if source is None or key is None or fields is None:
        return None
    return FeatureNode(
        common,
        source,
        key,
        fields,
        r.at.key((*path, "fields")),
        max_age_s=max_age,
        cache_ttl_s=ttl,
        cache_pos=r.at.value((*path, "cache")) if "cache" in body else None,
    )


def _fields(
    r: Reader, body: dict[str, Any], path: YamlPath, where: str, node: str
) -> tuple[FeatureFieldSpec, ...] | None:
    if "fields" not in body:
        r.error(
            r.at.key(path),
            f"{where} needs 'fields' (each field with its datatype and default, e.g. "
            "{age_days: {datatype: FP32, default: 0}})",
        )
        return None
    fpath = (*path, "fields")
    raw = r.mapping(body["fields"], fpath, "'fields'")
    if raw is None:
        return None
    if not raw:
        r.error(r.at.value(fpath), f"{where}: 'fields' is empty; name at least one field")
        return None
    out: list[FeatureFieldSpec] = []
    ok = True
    for name, spec in raw.items():
        path_ = (*fpath, name)
        if not _FIELD_NAME.match(str(name)):
            r.error(r.at.key(path_), f"field name '{name}' is not valid (letters, digits and '_')")
            ok = False
            continue
        body_ = r.mapping(spec, path_, f"field '{name}'")
        if body_ is None:
            ok = False
            continue
        r.check_keys(body_, path_, FIELD_KEYS, f"field '{name}'")
        datatype = r.datatype(body_, path_, f"field '{name}'")
        if "default" not in body_:
            r.error(
                r.at.key(path_),
                f"field '{name}' needs a 'default' (used when the entity or value is absent, stale, "
                "or the source does not answer)",
            )
            ok = False
            continue
        default = _default(r, body_["default"], datatype, (*path_, "default"), name)
        if datatype is None or default is None:
            ok = False
            continue
        contract = None
        if "contract" in body_:
            contract = read_contract(
                r, body_["contract"], (*path_, "contract"), f"{node}.{name}", datatype, (-1, 1)
            )
        out.append(FeatureFieldSpec(str(name), datatype, default, r.at.key(path_), contract))
    return tuple(out) if ok else None


def _default(
    r: Reader, value: Any, datatype: DataType | None, path: YamlPath, name: str
) -> bool | int | float | str | None:
    """The default, checked against the field's datatype."""
    if datatype is None:
        return None
    pos = r.at.text(path)
    if datatype is DataType.BYTES:
        if isinstance(value, str):
            return value
        r.error(pos, f"field '{name}' is BYTES: its default must be text, got {value!r}")
        return None
    if datatype is DataType.BOOL:
        if isinstance(value, bool):
            return value
        r.error(pos, f"field '{name}' is BOOL: its default must be true or false, got {value!r}")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        r.error(pos, f"field '{name}' is {datatype.value}: its default must be a number, got {value!r}")
        return None
    if not datatype.is_float:
        if isinstance(value, float) and not value.is_integer():
            r.error(
                pos, f"field '{name}' is {datatype.value}: its default must be a whole number, got {value}"
            )
            return None
        info = _int_range(datatype)
        if not info[0] <= int(value) <= info[1]:
            r.error(pos, f"field '{name}': default {value} does not fit {datatype.value}")
            return None
        return int(value)
    return float(value)


def _int_range(datatype: DataType) -> tuple[int, int]:
    info = np.iinfo(datatype.numpy_dtype)
    return int(info.min), int(info.max)
