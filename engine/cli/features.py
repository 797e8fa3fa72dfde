"""``engine features``: list, fetch from and load into the feature sources of a server config.

The config is ``--config FILE``, else ``ENGINE_CONFIG``, else an ``engine.yaml`` found in
(or above) the graph folders given, else ``graphs/engine.yaml``. ``engine validate`` and
``engine graph draw`` find it the same way, so a ``features:`` node is checked against the
sources the server will have.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.config import read_config_file, repository_config

if TYPE_CHECKING:
    from adapters.registry import FeatureCatalog


def enclosing_repository_config(paths: Sequence[Path] = ()) -> Path | None:
    """The repository ``engine.yaml`` in (or up to two folders above) the graph paths given, else
    in ``graphs/``: a graph.yaml or a graph folder names its repository this way."""
    for path in [*paths, Path("graphs")]:
        folder = path.resolve() if path.is_dir() else path.resolve().parent
        for candidate in (folder, *list(folder.parents)[:2]):
            found = repository_config(candidate)
            if found is not None:
                return found
    return None


def find_config(explicit: Path | None, paths: Sequence[Path] = ()) -> Path | None:
    """The server config to read feature sources from (see the module docstring)."""
    if explicit is not None:
        return explicit
    if os.environ.get("ENGINE_CONFIG"):
        return Path(os.environ["ENGINE_CONFIG"])
    return enclosing_repository_config(paths)


def load_catalog(config: Path | None, paths: Sequence[Path] = ()) -> FeatureCatalog:
    """The feature sources the server would have: those of the graph repository's own engine.yaml
    (found from ``paths``), replaced by name by those of ``config``; ValueError if invalid."""
    from adapters.registry import FeatureCatalog

    sources: dict[str, Any] = {}
    own = enclosing_repository_config(paths) if paths else None
    if own is not None and (config is None or own.resolve() != config.resolve()):
        sources.update(read_config_file(own).get("feature_sources", {}))
    if config is not None:
        sources.update(read_config_file(config).get("feature_sources", {}))
    env_sources = os.environ.get("ENGINE_FEATURE_SOURCES")
    if env_sources:
        sources = json.loads(env_sources)
    return FeatureCatalog.from_config(sources)


def close_catalog(catalog: FeatureCatalog) -> None:
    with contextlib.suppress(Exception):
        asyncio.run(catalog.close())


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    features = sub.add_parser("features", help="list, fetch from and load into feature sources")
    actions = features.add_subparsers(metavar="ACTION")

    listing = actions.add_parser("list", help="the feature sources of the server config")
    listing.add_argument(
        "--config", type=Path, help="engine.yaml (default: ENGINE_CONFIG, graphs/engine.yaml)"
    )
    listing.set_defaults(run=_list)

    fetch = actions.add_parser("fetch", help="read fields of some keys, with each value's status")
    fetch.add_argument("source")
    fetch.add_argument("keys", nargs="+")
    fetch.add_argument(
        "--field",
        "-f",
        action="append",
        required=True,
        metavar="NAME[:DATATYPE]",
        help="a field to read (datatype default FP32); repeat per field",
    )
    fetch.add_argument("--config", type=Path)
    fetch.set_defaults(run=_fetch)

    load = actions.add_parser(
        "load", help="write a CSV/Parquet/JSON Lines file into a Redis or Postgres source"
    )
    load.add_argument("source", help="a name under feature_sources in the config")
    load.add_argument("file", type=Path, help=".csv, .parquet or .jsonl; one row per entity")
    load.add_argument("--config", type=Path)
    load.add_argument(
        "--key-column", help="the file's entity-key column (default: the source's, else the first)"
    )
    load.set_defaults(run=_load)


def _catalog(args: argparse.Namespace, command: str) -> FeatureCatalog | None:
    config = find_config(args.config)
    try:
        return load_catalog(config)
    except ValueError as exc:
        print(f"engine features {command}: {exc}", file=sys.stderr)
        return None


def _list(args: argparse.Namespace) -> int:
    catalog = _catalog(args, "list")
    if catalog is None:
        return 2
    try:
        if not len(catalog):
            print("no feature sources declared (feature_sources in engine.yaml)")
        for name in catalog.names():
            source = catalog.get(name)
            schema = source.schema() if source is not None else None
            fields = (
                ", ".join(f"{f}:{t.value}" for f, t in schema.items()) if schema else "(fields not declared)"
            )
            print(f"{name}\t{source!r}\n\t{fields}")
    finally:
        close_catalog(catalog)
    return 0


def _fetch(args: argparse.Namespace) -> int:
    from engine.interfaces import FeatureField, FeatureStatus
    from engine.tensors import DataType

    catalog = _catalog(args, "fetch")
    if catalog is None:
        return 2
    source = catalog.get(args.source)
    if source is None:
        print(f"engine features fetch: no source '{args.source}' (have: {', '.join(catalog.names())})")
        close_catalog(catalog)
        return 2
    fields = []
    for item in args.field:
        name, _, datatype = item.partition(":")
        zero: object = "" if datatype.upper() == "BYTES" else 0
        fields.append(FeatureField(name, DataType.parse(datatype or "FP32"), zero))

    async def run() -> int:
        try:
            batch = await source.fetch(args.keys, fields)
        finally:
            await catalog.close()
        for row, key in enumerate(args.keys):
            cells = []
            for col, field in enumerate(fields):
                value = batch.values[field.name][row]
                value = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
                status = FeatureStatus(int(batch.status[row, col])).name.lower()
                cells.append(f"{field.name}={value!s} ({status})")
            print(f"{key}: " + ", ".join(cells))
        return 0

    from engine.errors import DependencyUnavailable

    try:
        return asyncio.run(run())
    except DependencyUnavailable as exc:
        print(f"engine features fetch: {exc}", file=sys.stderr)
        return 1


def _load(args: argparse.Namespace) -> int:
    from adapters import loader

    config = find_config(args.config)
    if config is None:
        print("engine features load: no config found; pass --config engine.yaml", file=sys.stderr)
        return 2
    argv = [args.source, str(args.file), "--config", str(config)]
    if args.key_column:
        argv += ["--key-column", args.key_column]
    return loader.main(argv)
