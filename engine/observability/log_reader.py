"""Reading request-log files back: rotated and gzipped files in order, damaged lines skipped and counted.

``log_files`` lists a directory's ``*.jsonl``, ``*.jsonl.gz`` and ``*.parquet`` files
(what the JSONL and Parquet sinks write) sorted by name (the sinks name them by creation
time); a plain file whose gzipped copy already exists (a crash between compressing and
deleting) is left out. A directory holding none of them, and a file that cannot be read
(permissions, a Parquet file that does not parse), raise ``LogReadError`` naming the file:
readers fail loudly instead of reporting "0 records".
``read_records`` yields each whole record; a last line without its newline
(a write cut short by ``kill -9``) counts as ``truncated``, any other line that
is not a JSON object as ``corrupt``.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.observability.request_record import EVENT_SCHEMA

LOG_SUFFIXES = (".jsonl", ".jsonl.gz", ".parquet")


class LogReadError(ValueError):
    """A request-log path that holds no log files, or a file that cannot be read."""


@dataclass
class ReadStats:
    files: int = 0
    records: int = 0
    truncated: int = 0
    corrupt: int = 0
    events: int = 0  # server events (``engine.event/1``, rollout transitions): not requests, passed over


def log_files(path: str | Path) -> list[Path]:
    """The log files at ``path`` (a directory, or one file), oldest first."""
    root = Path(path)
    if root.is_file():
        if not root.name.endswith(LOG_SUFFIXES):
            raise LogReadError(f"{root} is not a request-log file (.jsonl, .jsonl.gz or .parquet)")
        return [root]
    if not root.is_dir():
        raise FileNotFoundError(f"no request-log directory or file at {root}")
    found = [p for p in root.iterdir() if p.is_file() and p.name.endswith(LOG_SUFFIXES)]
    if not found and any(p.is_file() for p in root.iterdir()):
        raise LogReadError(f"no request-log files (.jsonl, .jsonl.gz, .parquet) in {root}")
    zipped = {p.name[: -len(".gz")] for p in found if p.name.endswith(".gz")}
    kept = [p for p in found if p.name.endswith(".gz") or p.name not in zipped]
    return sorted(kept, key=lambda p: p.name.removesuffix(".gz"))


def read_records(path: str | Path, stats: ReadStats | None = None) -> Iterator[dict[str, Any]]:
    """Every whole record under ``path``, in file order."""
    stats = stats if stats is not None else ReadStats()
    for file in log_files(path):
        stats.files += 1
        if file.name.endswith(".parquet"):
            yield from _parquet(file, stats)
            continue
        try:
            data = _read(file, stats)
        except OSError as exc:
            raise LogReadError(f"cannot read {file}: {exc.strerror or exc}") from exc
        yield from _parse(data, stats)


def _parquet(file: Path, stats: ReadStats) -> Iterator[dict[str, Any]]:
    from engine.observability.log_sinks_parquet import read_parquet, require_pyarrow

    try:
        require_pyarrow()
    except ValueError as exc:  # says what to install
        raise LogReadError(str(exc)) from exc
    try:
        records = read_parquet(file)
    except Exception as exc:  # pyarrow's own errors (ArrowInvalid, OSError): not a readable Parquet file
        raise LogReadError(f"cannot read {file} as Parquet: {exc}") from exc
    for record in records:
        if record.get("schema") == EVENT_SCHEMA:
            stats.events += 1
            continue
        stats.records += 1
        yield record


def parse_lines(data: bytes, stats: ReadStats) -> tuple[list[dict[str, Any]], bytes]:
    """The whole records in ``data`` and the unfinished tail (bytes after the last newline)."""
    end = data.rfind(b"\n") + 1
    return list(_parse(data[:end], stats)), data[end:]


def _read(file: Path, stats: ReadStats) -> bytes:
    if not file.name.endswith(".gz"):
        data = file.read_bytes()
    else:
        try:
            with gzip.open(file, "rb") as f:
                data = f.read()
        except (EOFError, OSError, zlib.error):  # a gzip cut short: keep what decompresses
            data = _salvage(file)
    if data and not data.endswith(b"\n"):
        stats.truncated += 1
        data = data[: data.rfind(b"\n") + 1]
    return data


def _salvage(file: Path) -> bytes:
    out = bytearray()
    decoder = zlib.decompressobj(zlib.MAX_WBITS | 16)
    with contextlib.suppress(zlib.error):
        out += decoder.decompress(file.read_bytes())
    return bytes(out)


def _parse(data: bytes, stats: ReadStats) -> Iterator[dict[str, Any]]:
    for line in data.splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            stats.corrupt += 1
            continue
        if not isinstance(record, dict):
            stats.corrupt += 1
            continue
        if record.get("schema") == EVENT_SCHEMA:
            stats.events += 1
            continue
        stats.records += 1
        yield record
