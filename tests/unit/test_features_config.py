"""Where feature sources come from: engine.yaml (named or the repository's own), env, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine import cli
from engine.cli.features import find_config, load_catalog
from engine.config import ServeSettings

USERS = "user_id,age_days,country\nu1,400,DE\nu2,20,FR\n"
CONFIG = """\
feature_sources:
  users:
    type: static
    path: data/users.csv
    key_column: user_id
    fields: {age_days: FP32, country: BYTES}
"""
GRAPH = """\
graph: scored
inputs:
  user_id: {datatype: BYTES, shape: [-1, 1]}
nodes:
  user:
    features: users
    key: inputs.user_id
    fields:
      age_days: {datatype: FP32, default: 0}
    timeout: 20ms
outputs:
  age: user.age_days
"""


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    root = tmp_path / "graphs"
    (root / "data").mkdir(parents=True)
    (root / "data" / "users.csv").write_text(USERS)
    (root / "engine.yaml").write_text(CONFIG)
    (root / "scored").mkdir()
    (root / "scored" / "graph.yaml").write_text(GRAPH)
    return root


def test_the_repository_config_is_read_when_none_is_named(repository: Path) -> None:
    settings = ServeSettings.from_env(environ={}, graphs=repository)
    path = settings.feature_sources["users"]["path"]
    assert path == str((repository / "data" / "users.csv").resolve())  # relative to the config's folder


def test_a_named_config_wins_but_keeps_the_repositorys_sources(repository: Path, tmp_path: Path) -> None:
    (repository / "engine.yaml").write_text(CONFIG + "max_queue: 99\n")
    other = tmp_path / "other.yaml"
    other.write_text("max_queue: 7\n")
    settings = ServeSettings.from_env(environ={}, graphs=repository, config=other)
    assert settings.max_queue == 7  # the repository's other settings are not used
    assert list(settings.feature_sources) == ["users"]  # but the sources its graphs read are
    other.write_text(
        "feature_sources:\n  users: {type: redis, url: redis://cache:6379/0}\n  extra: {type: redis}\n"
    )
    from_env = ServeSettings.from_env(environ={"ENGINE_CONFIG": str(other)}, graphs=repository)
    assert from_env.feature_sources["users"] == {"type": "redis", "url": "redis://cache:6379/0"}  # replaced
    assert set(from_env.feature_sources) == {"users", "extra"}


def test_workers_receive_sources_through_the_environment(repository: Path, tmp_path: Path) -> None:
    sources = {
        "users": {"type": "static", "path": str(repository / "data/users.csv"), "key_column": "user_id"}
    }
    empty = tmp_path / "empty"
    empty.mkdir()
    settings = ServeSettings.from_env(environ={"ENGINE_FEATURE_SOURCES": json.dumps(sources)}, graphs=empty)
    assert settings.feature_sources == sources


def test_validate_finds_the_repository_config(
    repository: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ENGINE_CONFIG", raising=False)
    monkeypatch.chdir(repository.parent)
    assert cli.main(["validate", str(repository / "scored")]) == 0
    assert "scored/graph.yaml: ok" in capsys.readouterr().out
    (repository / "engine.yaml").write_text(CONFIG.replace("users:", "people:"))
    assert cli.main(["validate", str(repository)]) == 1
    assert "unknown feature source 'users' (declared: people)" in capsys.readouterr().out


def test_find_config_prefers_the_flag_then_the_environment(
    repository: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    named = tmp_path / "named.yaml"
    monkeypatch.delenv("ENGINE_CONFIG", raising=False)
    assert find_config(named, [repository]) == named
    assert find_config(None, [repository / "scored" / "graph.yaml"]) == repository / "engine.yaml"
    monkeypatch.setenv("ENGINE_CONFIG", str(named))
    assert find_config(None, [repository]) == named


def test_features_fetch_prints_values_and_statuses(
    repository: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ENGINE_CONFIG", raising=False)
    config = str(repository / "engine.yaml")
    code = cli.main(
        [
            "features",
            "fetch",
            "users",
            "u1",
            "zz",
            "-f",
            "age_days",
            "-f",
            "country:BYTES",
            "--config",
            config,
        ]
    )
    assert code == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "u1: age_days=400.0 (present), country=DE (present)",
        "zz: age_days=0.0 (missing), country= (missing)",
    ]
    assert cli.main(["features", "list", "--config", config]) == 0
    assert "age_days:FP32, country:BYTES" in capsys.readouterr().out


def test_a_bad_source_config_is_reported(repository: Path) -> None:
    (repository / "engine.yaml").write_text(CONFIG.replace("key_column: user_id", "key_colum: user_id"))
    with pytest.raises(ValueError, match="unknown key 'key_colum'; did you mean 'key_column'"):
        load_catalog(repository / "engine.yaml")
