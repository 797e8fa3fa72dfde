"""``engine logs``: read request-log files back (tail, query, to-parquet).

``engine.cli.command`` adds these with ``logs.add_parser(sub)``. Every command reads
a directory of JSON Lines files (rotated and gzipped ones included, oldest
first) or a single file, skips damaged lines and says how many on stderr.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from collections import deque
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engine.observability.log_reader import LogReadError, ReadStats, log_files, parse_lines, read_records


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Add ``logs tail|query|to-parquet`` to the ``engine`` command's subparsers."""
    logs = subparsers.add_parser("logs", help="read request-log files (tail, query, to-parquet)")
    sub = logs.add_subparsers(metavar="COMMAND")
    tail = sub.add_parser("tail", help="print the last records (JSON Lines)")
    tail.add_argument("path", metavar="DIR", help="request-log directory (or one file)")
    tail.add_argument("-n", type=int, default=10, help="how many records (default 10)")
    tail.add_argument("--follow", "-f", action="store_true", help="keep printing new records")
    tail.set_defaults(run=_tail)
    query = sub.add_parser("query", help="print the records matching every filter given")
    query.add_argument("path", metavar="DIR", help="request-log directory (or one file)")
    query.add_argument("--graph", help="graph name")
    query.add_argument("--status", help="gRPC status name, e.g. OK or INVALID_ARGUMENT")
    query.add_argument("--since", type=_when, help="RFC 3339 time or date (UTC when no offset), inclusive")
    query.add_argument("--until", type=_when, help="RFC 3339 time or date, exclusive")
    query.add_argument("--id", help="request id")
    query.add_argument("--json", action="store_true", help="print whole records as JSON Lines")
    query.set_defaults(run=_query)
    parquet = sub.add_parser("to-parquet", help="convert the records to one Parquet file (needs pyarrow)")
    parquet.add_argument("path", metavar="DIR", help="request-log directory (or one file)")
    parquet.add_argument("out", metavar="OUT.parquet")
    parquet.set_defaults(run=_to_parquet)
    logs.set_defaults(run=lambda args: _usage(logs))
    return logs


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _tail(args: argparse.Namespace) -> int:
    stats = ReadStats()
    try:
        last = deque(read_records(args.path, stats), maxlen=max(args.n, 0))
    except (FileNotFoundError, LogReadError) as exc:
        return _fail(str(exc))
    for record in last:
        _print_json(record)
    _report(stats)
    if args.follow:
        try:
            _follow(Path(args.path))
        except KeyboardInterrupt:
            return 0
    return 0


def _follow(root: Path, interval_s: float = 0.5) -> None:
    """Print records appended after the files as they are now; new files too."""
    offsets = {_stem(p): p.stat().st_size if not p.name.endswith(".gz") else -1 for p in log_files(root)}
    stats = ReadStats()
    while True:
        time.sleep(interval_s)
        for file in log_files(root):
            stem = _stem(file)
            if file.name.endswith(".parquet"):  # a Parquet file is whole when it appears
                if stem not in offsets:
                    offsets[stem] = -1
                    for record in read_records(file, stats):
                        _print_json(record)
                continue
            if file.name.endswith(".gz"):
                if stem in offsets:
                    continue  # a file we followed, now rotated and compressed
                records, _ = parse_lines(_whole(file), stats)
                offsets[stem] = -1
            else:
                start = offsets.get(stem, 0)
                with file.open("rb") as f:
                    f.seek(start)
                    data = f.read()
                records, rest = parse_lines(data, stats)  # an unfinished line waits for the next poll
                offsets[stem] = start + len(data) - len(rest)
            for record in records:
                _print_json(record)
        sys.stdout.flush()


def _whole(file: Path) -> bytes:
    try:
        with gzip.open(file, "rb") as f:
            return f.read()
    except (EOFError, OSError):
        return b""


def _stem(file: Path) -> str:
    return file.name.removesuffix(".gz")


def _query(args: argparse.Namespace) -> int:
    stats = ReadStats()
    status = args.status.upper() if args.status else None
    matched = 0
    try:
        for record in read_records(args.path, stats):
            if not _matches(record, args, status):
                continue
            matched += 1
            if args.json:
                _print_json(record)
            else:
                print(_summary(record))
    except (FileNotFoundError, LogReadError) as exc:
        return _fail(str(exc))
    _report(stats, f"{matched} matched")
    return 0


def _matches(record: dict[str, Any], args: argparse.Namespace, status: str | None) -> bool:
    if args.graph is not None and record.get("graph") != args.graph:
        return False
    if status is not None and str(record.get("status", "")).upper() != status:
        return False
    if args.id is not None and record.get("id") != args.id:
        return False
    if args.since is not None or args.until is not None:
        when = _parse_time(str(record.get("time", "")))
        if when is None:
            return False
        if args.since is not None and when < args.since:
            return False
        if args.until is not None and when >= args.until:
            return False
    return True


def _summary(record: dict[str, Any]) -> str:
    where = f"{record.get('graph', '?')}:{record.get('version', '?')}"
    error = f"  {record['error']}" if record.get("error") else ""
    return (
        f"{record.get('time', '?')}  {record.get('id', '?')}  {where}  {record.get('status', '?')}  "
        f"{record.get('latency_us', '?')}us{error}"
    )


def _to_parquet(args: argparse.Namespace) -> int:
    from engine.observability.log_sinks_parquet import write_parquet

    stats = ReadStats()
    try:
        rows = write_parquet(read_records(args.path, stats), args.out)
    except (FileNotFoundError, ValueError) as exc:
        return _fail(str(exc))
    print(f"wrote {rows} records to {args.out}")
    _report(stats)
    return 0


def _when(text: str) -> datetime:
    parsed = _parse_time(text)
    if parsed is None:
        raise argparse.ArgumentTypeError(f"not an RFC 3339 time or date: {text!r}")
    return parsed


def _parse_time(text: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _print_json(record: dict[str, Any]) -> None:
    print(json.dumps(record, separators=(",", ":")))


def _report(stats: ReadStats, *extra: Iterable[str] | str) -> None:
    parts = [f"{stats.records} records in {stats.files} files", *map(str, extra)]
    if stats.truncated:
        parts.append(f"{stats.truncated} truncated last lines skipped")
    if stats.corrupt:
        parts.append(f"{stats.corrupt} corrupt lines skipped")
    print("; ".join(parts), file=sys.stderr)


def _fail(message: str) -> int:
    print(f"engine logs: {message}", file=sys.stderr)
    return 1
