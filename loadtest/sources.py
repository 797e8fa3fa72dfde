"""Request sources: the ModelInferRequests a run sends, built and serialised before it starts.

Three kinds (see ``docs/loadtest.md``):

- ``generate``: inputs drawn from per-input generators, with datatypes and
  shapes from the graph's ModelMetadata (``-1`` dimensions become ``batch``);
- ``jsonl``: one ``{"inputs": {...}, "graph"?: ...}`` per line;
- ``request_log``: the engine's request-log records (``"schema": "engine.request/1"``);
  records of other graphs are skipped.

Tensors are sent as ``raw_input_contents`` (little-endian, row-major; BYTES
elements each preceded by a 4-byte little-endian length), as perf_analyzer does.
The generator cycles through the pool in order: request *i* sends payload
``i mod len(pool)``.
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from engine.protocol.generated.inference import grpc_service_pb2 as pb
from loadtest.sla import InputGenerator, Source

REQUEST_LOG_SCHEMA = "engine.request/1"
Tensor = tuple[str, np.ndarray]  # (V2 datatype name, array)
BytesTree = bytes | list["BytesTree"]  # a BYTES tensor's elements, nested as its shape
NUMPY_TYPES = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}


class SourceError(Exception):
    """The request source cannot produce valid requests for the target graph (→ exit 2)."""


@dataclass(frozen=True)
class RequestPool:
    payloads: list[bytes]
    description: str
    skipped: int = 0  # request-log records of other graphs


def build_pool(source: Source, graph: str, version: str, metadata: pb.ModelMetadataResponse) -> RequestPool:
    if source.kind == "generate":
        return _generated(source, graph, version, metadata)
    assert source.path is not None
    return _replayed(source, graph, version, metadata)


# -- generated ---------------------------------------------------------------------------------
def _generated(source: Source, graph: str, version: str, metadata: pb.ModelMetadataResponse) -> RequestPool:
    declared = {t.name: t for t in metadata.inputs}
    unknown = sorted(set(source.inputs) - set(declared))
    if unknown:
        raise SourceError(
            f"source.generate.inputs names {', '.join(unknown)}, which graph '{graph}' does not have "
            f"(its inputs: {', '.join(declared) or 'none'})"
        )
    rng = np.random.default_rng(source.seed)
    payloads = []
    for _ in range(source.pool):
        tensors = {}
        for name, meta in declared.items():
            gen = source.inputs.get(name, InputGenerator(kind="default"))
            shape = gen.shape or tuple(source.batch if d < 0 else d for d in meta.shape)
            if gen.shape is not None and not _shape_fits(gen.shape, tuple(meta.shape)):
                raise SourceError(f"input '{name}': shape {list(gen.shape)} does not fit {list(meta.shape)}")
            tensors[name] = (meta.datatype, _draw(rng, gen, meta.datatype, shape, name))
        payloads.append(encode_request(graph, version, tensors))
    described = ", ".join(f"{n}: {source.inputs.get(n, InputGenerator('default')).kind}" for n in declared)
    return RequestPool(payloads, f"{source.pool} generated requests ({described})")


def _shape_fits(shape: tuple[int, ...], declared: tuple[int, ...]) -> bool:
    return len(shape) == len(declared) and all(d < 0 or d == s for s, d in zip(shape, declared, strict=True))


def _draw(
    rng: np.random.Generator, gen: InputGenerator, datatype: str, shape: tuple[int, ...], name: str
) -> np.ndarray:
    kind, args = gen.kind, gen.args
    if datatype == "BYTES":
        if kind == "choice":
            return np.array(
                [str(v) for v in rng.choice(np.array(args, dtype=object), size=shape).flat], dtype=object
            ).reshape(shape)
        if kind == "constant":
            return np.full(shape, str(args), dtype=object)
        if kind in ("default", "text"):
            (low, high), alphabet = (
                args if kind == "text" else ((8, 8), "abcdefghijklmnopqrstuvwxyz0123456789")
            )
            letters = np.array(list(alphabet))
            flat = [
                "".join(rng.choice(letters, size=int(rng.integers(low, high + 1))))
                for _ in range(int(np.prod(shape)))
            ]
            return np.array(flat, dtype=object).reshape(shape)
        raise SourceError(f"input '{name}' is BYTES: use text, choice or constant, not {kind}")
    dtype = NUMPY_TYPES.get(datatype)
    if dtype is None:
        raise SourceError(f"input '{name}': unsupported datatype {datatype}")
    if kind == "text":
        raise SourceError(f"input '{name}' is {datatype}: text generates BYTES only")
    if kind == "default":
        if datatype == "BOOL":
            kind, args = "bool", 0.5
        elif np.issubdtype(dtype, np.integer):
            kind, args = "int", [0, 100]
        else:
            kind, args = "uniform", [0.0, 1.0]
    values: np.ndarray
    if kind == "uniform":
        values = rng.uniform(args[0], args[1], size=shape)
    elif kind == "int":
        values = rng.integers(int(args[0]), int(args[1]), size=shape, endpoint=True)
    elif kind == "normal":
        values = rng.normal(args[0], args[1], size=shape)
    elif kind == "choice":
        values = rng.choice(np.array(args), size=shape)
    elif kind == "constant":
        values = np.broadcast_to(np.array(args), shape)
    else:  # bool
        values = rng.random(size=shape) < float(args)
    return np.asarray(values).astype(dtype)


# -- replayed ----------------------------------------------------------------------------------
def _replayed(source: Source, graph: str, version: str, metadata: pb.ModelMetadataResponse) -> RequestPool:
    assert source.path is not None
    declared = {t.name: t for t in metadata.inputs}
    payloads: list[bytes] = []
    skipped = 0
    with source.path.open() as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            where = f"{source.path}:{number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise SourceError(f"{where}: not JSON ({exc.msg})") from exc
            if not isinstance(record, dict) or not isinstance(record.get("inputs"), dict):
                raise SourceError(f'{where}: expected an object with "inputs": {{name: tensor}}')
            if source.kind == "request_log" and record.get("schema") != REQUEST_LOG_SCHEMA:
                raise SourceError(
                    f"{where}: schema {record.get('schema')!r} is not {REQUEST_LOG_SCHEMA!r}; "
                    "is this a request-log file?"
                )
            if record.get("graph", graph) != graph:
                skipped += 1
                continue
            tensors = {name: _tensor(where, name, raw) for name, raw in record["inputs"].items()}
            _check_against(where, tensors, declared, graph)
            request_id = record.get("id")  # kept: labels (engine feedback load) join by it
            payloads.append(encode_request(graph, version, tensors, str(request_id) if request_id else ""))
    if not payloads:
        raise SourceError(
            f"{source.path}: no requests for graph '{graph}' (skipped {skipped} of other graphs)"
        )
    kind = "request-log records" if source.kind == "request_log" else "requests"
    return RequestPool(payloads, f"{len(payloads)} {kind} from {source.path}", skipped)


def _tensor(where: str, name: str, raw: object) -> Tensor:
    if not isinstance(raw, dict) or "datatype" not in raw or "data" not in raw:
        raise SourceError(f"{where}: input '{name}' needs datatype, shape and data")
    datatype = str(raw["datatype"])
    try:
        if datatype == "BYTES":
            array = np.array(_bytes_tree(raw["data"]), dtype=object)
        elif datatype in NUMPY_TYPES:
            array = np.array(raw["data"], dtype=NUMPY_TYPES[datatype])
        else:
            raise SourceError(f"{where}: input '{name}': unknown datatype {datatype}")
        shape = raw.get("shape", list(array.shape))
        array = array.reshape(shape)
    except (ValueError, TypeError) as exc:
        raise SourceError(f"{where}: input '{name}': {exc}") from exc
    return datatype, array


def _bytes_tree(value: object) -> BytesTree:
    if isinstance(value, list):
        return [_bytes_tree(v) for v in value]
    if isinstance(value, dict) and "b64" in value:
        return base64.b64decode(value["b64"])
    if isinstance(value, str):
        return value.encode()
    raise ValueError(f"BYTES elements are strings or {{'b64': ...}}, got {value!r}")


def _check_against(
    where: str,
    tensors: Mapping[str, Tensor],
    declared: Mapping[str, pb.ModelMetadataResponse.TensorMetadata],
    graph: str,
) -> None:
    missing = sorted(set(declared) - set(tensors))
    extra = sorted(set(tensors) - set(declared))
    if missing or extra:
        raise SourceError(
            f"{where}: inputs do not match graph '{graph}'"
            + (f"; missing {', '.join(missing)}" if missing else "")
            + (f"; unknown {', '.join(extra)}" if extra else "")
        )
    for name, (datatype, array) in tensors.items():
        meta = declared[name]
        if datatype != meta.datatype:
            raise SourceError(
                f"{where}: input '{name}' is {datatype}, graph '{graph}' expects {meta.datatype}"
            )
        if not _shape_fits(array.shape, tuple(meta.shape)):
            raise SourceError(
                f"{where}: input '{name}' has shape {list(array.shape)}, graph expects {list(meta.shape)}"
            )


# -- encoding ----------------------------------------------------------------------------------
def encode_request(graph: str, version: str, tensors: Mapping[str, Tensor], request_id: str = "") -> bytes:
    request = pb.ModelInferRequest(model_name=graph, model_version=version, id=request_id)
    for name, (datatype, array) in tensors.items():
        request.inputs.add(name=name, datatype=datatype, shape=list(array.shape))
        request.raw_input_contents.append(_raw(datatype, array))
    return request.SerializeToString()


def _raw(datatype: str, array: np.ndarray) -> bytes:
    if datatype == "BYTES":
        parts = []
        for item in array.flat:
            data = item if isinstance(item, bytes) else str(item).encode()
            parts.append(struct.pack("<I", len(data)) + data)
        return b"".join(parts)
    return np.ascontiguousarray(array, dtype=np.dtype(NUMPY_TYPES[datatype]).newbyteorder("<")).tobytes()
