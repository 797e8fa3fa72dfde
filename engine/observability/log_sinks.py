"""The JSON Lines request-log sink (the others: ``log_sinks_http``, ``log_sinks_parquet``;
chosen by ``log_config.sink_from_config``).

``JsonlSink`` writes one JSON object per line into rotating files in one
directory. Each batch is encoded first and written with one ``write`` call;
a failed write is cut back (``ftruncate``) to the last whole line, or the file
is abandoned, so a line is never half-written by us. A ``kill -9`` during a
write can still leave a partial last line: readers (``log_reader``) skip and
count it, and reopening such a file first ends it with a newline.

Files are named from ``file_pattern`` (``{time}`` = UTC ``YYYYmmddTHHMMSSffffffZ``
of the file's creation, ``{pid}`` = process id), so sorting names sorts files
in time. A file is rotated when the next batch would pass ``rotate_bytes`` or
it is older than ``rotate_interval_s`` (checked when writing); rotated files
are gzipped (``NAME.jsonl.gz``) when ``gzip`` is true.

Before each batch the open file's inode is compared with what its name now points at: a file
that logrotate moved away or someone deleted (the directory too) is let go and a new one is
created (the directory with it), so records are never written where nobody will look and
``written`` counts what is on disk under the directory. The directory must be writable at
start (``check_writable``, also used by the Parquet sink): an unwritable one fails the start-up
instead of showing up later as ``failed`` counts.

``fsync``: ``none`` (the OS decides), ``batch`` (``fdatasync`` after every
batch; default) or ``always`` (files opened ``O_DSYNC`` and the directory
synced when a file is created or rotated).
"""

from __future__ import annotations

import gzip as gzip_module
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engine.observability.record_cap import encode_line
from engine.observability.request_log import SinkWriteError

FSYNC_POLICIES = ("none", "batch", "always")
YIELD_EVERY = 4
"""Records encoded between two GIL hand-backs on the sink thread."""


def file_time(time_ns: int) -> str:
    return datetime.fromtimestamp(time_ns // 1000 / 1e6, UTC).strftime("%Y%m%dT%H%M%S%fZ")


def check_writable(directory: Path) -> None:
    """Create ``directory`` if needed and prove a file can be made in it; ``OSError`` if not."""
    directory.mkdir(parents=True, exist_ok=True)
    probe = directory / f".write-check-{os.getpid()}"
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.close(fd)
    probe.unlink()


class JsonlSink:
    """Rotating JSON Lines files in ``directory`` (see the module docstring)."""

    def __init__(
        self,
        directory: str | Path,
        *,
        file_pattern: str = "requests-{time}-{pid}.jsonl",
        rotate_bytes: int = 64 * 1024 * 1024,
        rotate_interval_s: float = 3600.0,
        gzip: bool = False,
        fsync: str = "batch",
        now_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        if "{time}" not in file_pattern or not file_pattern.endswith(".jsonl") or "/" in file_pattern:
            raise ValueError(
                f"request log: file_pattern {file_pattern!r} must contain {{time}} and end in .jsonl"
            )
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"request log: fsync must be one of {', '.join(FSYNC_POLICIES)}, got {fsync!r}")
        if rotate_bytes < 1 or rotate_interval_s <= 0:
            raise ValueError("request log: rotate_bytes and rotate_interval_s must be positive")
        self.directory = Path(directory)
        check_writable(self.directory)
        self.file_pattern = file_pattern
        self.rotate_bytes = rotate_bytes
        self.rotate_interval_s = rotate_interval_s
        self.gzip = gzip
        self.fsync = fsync
        self._now_ns = now_ns
        self._fd: int | None = None
        self._path: Path | None = None
        self._size = 0
        self._opened = 0.0
        self._last_name = ""
        self.reopened = 0  # files let go because their name no longer led to them (moved, deleted)

    @property
    def path(self) -> Path | None:
        """The file being written, if one is open."""
        return self._path

    def write(self, records: Sequence[Mapping[str, Any]]) -> None:
        lines: list[bytes] = []
        bad = 0
        for i, record in enumerate(records):
            if i % YIELD_EVERY == YIELD_EVERY - 1:
                # Hand the GIL back: otherwise the event loop waits up to the interpreter's switch
                # interval (5 ms) for it while this thread encodes, and request latency spikes.
                time.sleep(0)
            try:
                lines.append(encode_line(record))
            except (TypeError, ValueError):
                bad += 1
        data = b"".join(lines)
        if data:
            self._write(data)
        if bad:
            raise SinkWriteError(f"{bad} records are not JSON-serialisable", bad)

    def close(self) -> None:
        self._rotate()

    def _write(self, data: bytes) -> None:
        if self._fd is not None and self._moved():
            self._abandon()  # rotated away or deleted: the next line goes to a new file
            self.reopened += 1
        if (
            self._fd is not None
            and self._size > 0
            and (
                self._size + len(data) > self.rotate_bytes
                or time.monotonic() - self._opened >= self.rotate_interval_s
            )
        ):
            self._rotate()
        fd = self._fd if self._fd is not None else self._open()
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if self.fsync == "batch":
                os.fdatasync(fd)
        except OSError:
            try:
                os.ftruncate(fd, self._size)  # back to the last whole line
            except OSError:
                self._abandon()  # cannot cut it back: reopening it first ends the partial line
                self._last_name = ""  # the same file may be reopened (it is not a rotation)
            raise
        self._size += len(data)

    def _open(self) -> int:
        stamp = self._now_ns()
        name = self.file_pattern.format(time=file_time(stamp), pid=os.getpid())
        while name == self._last_name:  # two files in one microsecond
            stamp += 1000
            name = self.file_pattern.format(time=file_time(stamp), pid=os.getpid())
        flags = os.O_RDWR | os.O_CREAT | os.O_APPEND | (os.O_DSYNC if self.fsync == "always" else 0)
        self.directory.mkdir(parents=True, exist_ok=True)  # deleted under us: made again
        path = self.directory / name
        fd = os.open(path, flags, 0o644)
        size = os.fstat(fd).st_size
        if size > 0 and os.pread(fd, 1, size - 1) != b"\n":  # a crash left a partial line: end it
            size += os.write(fd, b"\n")
        if self.fsync == "always":
            _sync_dir(self.directory)
        self._fd, self._path, self._size, self._opened, self._last_name = (
            fd,
            path,
            size,
            time.monotonic(),
            name,
        )
        return fd

    def _moved(self) -> bool:
        """Whether the open file's name no longer leads to it (renamed, deleted, directory gone)."""
        assert self._fd is not None and self._path is not None
        try:
            named = os.stat(self._path)
        except FileNotFoundError:
            return True
        except OSError:
            return False  # cannot tell: keep writing where we are
        mine = os.fstat(self._fd)
        return (named.st_ino, named.st_dev) != (mine.st_ino, mine.st_dev)

    def _abandon(self) -> None:
        fd, self._fd, self._path = self._fd, None, None
        if fd is not None:
            os.close(fd)

    def _rotate(self) -> None:
        path = self._path
        self._abandon()
        if path is None or not self.gzip or not path.is_file():
            return
        target = path.with_name(path.name + ".gz")
        partial = path.with_name(path.name + ".gz.tmp")
        try:
            with path.open("rb") as src, gzip_module.open(partial, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            os.replace(partial, target)
            path.unlink()
        except OSError:
            partial.unlink(missing_ok=True)  # the plain file stays; readers take it as it is
        if self.fsync == "always":
            _sync_dir(self.directory)


def _sync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
