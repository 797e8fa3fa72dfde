"""The ``engine`` command behaves in a shell: pipes, missing files, nothing to do, env defaults."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def engine(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def _log(path: Path, records: int) -> Path:
    with path.open("w") as handle:
        for i in range(records):
            record = {
                "id": f"r{i}",
                "time": "2026-01-01T00:00:00Z",
                "graph": "g",
                "version": "1",
                "status": "OK",
            }
            handle.write(json.dumps(record) + "\n")
    return path


def test_a_reader_that_leaves_early_ends_the_output_quietly(tmp_path: Path) -> None:
    log = _log(tmp_path / "log.jsonl", 50_000)
    process = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "logs", "query", str(log)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    first = process.stdout.readline()
    process.stdout.close()  # as `| head -1` does
    stderr = process.stderr.read().decode()
    assert process.wait(60) == 141
    assert first.startswith(b"2026-01-01")
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr, stderr


def test_shadow_replay_of_no_record_fails(tmp_path: Path, example_graphs: Path) -> None:
    log = _log(tmp_path / "log.jsonl", 3)  # records of graph g only
    result = engine(
        "shadow", "replay", "--from", str(log), "--graph", "quickstart",
        "--candidate", str(example_graphs / "quickstart"),
    )  # fmt: skip
    assert result.returncode == 1
    assert "(3 records read, 0 replayed, 3 ignored" in result.stderr
    assert f"no record of graph 'quickstart' could be replayed from {log}" in result.stderr


@pytest.mark.parametrize("missing", ["file", "config"])
def test_features_load_names_a_missing_file(tmp_path: Path, example_graphs: Path, missing: str) -> None:
    config = example_graphs / "engine.yaml" if missing == "file" else tmp_path / "nosuch.yaml"
    file = tmp_path / "nosuch.csv" if missing == "file" else example_graphs / "fraud" / "users.csv"
    result = engine("features", "load", "users", str(file), "--config", str(config))
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: no such {missing}: {file if missing == 'file' else config}"


def test_client_commands_take_the_url_from_engine_url() -> None:
    # A port nothing listens on: the error names that address, so the variable was used.
    result = engine("list", env={"ENGINE_URL": "127.0.0.1:1"})
    assert result.returncode == 1
    assert "UNAVAILABLE" in result.stderr and "127.0.0.1:1" in result.stderr, result.stderr
    explicit = engine("list", "--url", "127.0.0.1:2", env={"ENGINE_URL": "127.0.0.1:1"})
    assert "127.0.0.1:2" in explicit.stderr and "127.0.0.1:1" not in explicit.stderr  # --url wins
