"""Reading request-log files back: rotated and gzipped files in order, damaged lines skipped and counted.

``log_files`` lists a directory's ``*.jsonl`` and ``*.jsonl.gz`` files sorted
by name (the sink names them by creation time); a plain file whose gzipped
copy already exists (a crash between compressing and deleting) is left out.
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


@dataclass
class ReadStats:
    files: int = 0
    records: int = 0
    truncated: int = 0
    corrupt: int = 0


def log_files(path: str | Path) -> list[Path]:
    """The log files at ``path`` (a directory, or one file), oldest first."""
    root = Path(path)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise FileNotFoundError(f"no request-log directory or file at {root}")
    found = [p for p in root.iterdir() if p.is_file() and p.name.endswith((".jsonl", ".jsonl.gz"))]
    zipped = {p.name[: -len(".gz")] for p in found if p.name.endswith(".gz")}
    kept = [p for p in found if p.name.endswith(".gz") or p.name not in zipped]
    return sorted(kept, key=lambda p: p.name.removesuffix(".gz"))


def read_records(path: str | Path, stats: ReadStats | None = None) -> Iterator[dict[str, Any]]:
    """Every whole record under ``path``, in file order."""
    stats = stats if stats is not None else ReadStats()
    for file in log_files(path):
        stats.files += 1
        yield from _parse(_read(file, stats), stats)


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
        stats.records += 1
        yield record
