"""Settings: defaults < config file < ENGINE_* variables < flags, each checked, each declared once."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest
import yaml

from engine.cli import build_parser, main
from engine.config import SETTINGS, ServeSettings, Setting, flag_values, markdown_document

ROOT = Path(__file__).resolve().parents[2]
BY_NAME = {decl.name: decl for decl in SETTINGS}


@pytest.fixture(autouse=True)
def _elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run in an empty folder, so ``graphs/engine.yaml`` of the repository is never read by accident."""
    monkeypatch.chdir(tmp_path)


def _other(decl: Setting) -> object:
    """A value of the setting's type that is not its default."""
    if decl.choices:
        return next(choice for choice in decl.choices if choice != decl.default)
    if decl.kind is bool:
        return not decl.default
    if decl.kind is int:
        return int(str(decl.default)) + 7
    if decl.kind is float:
        return float(str(decl.default)) + 1.25
    if decl.kind is Path:
        return Path("elsewhere/graphs")
    if decl.kind is dict:
        return {"sink": "jsonl", "directory": "logs", "nested": {"ratio": 0.1, "on": True, "n": [1, 2]}}
    return f"{decl.name}-value"


def _text(decl: Setting, value: object) -> str:
    return json.dumps(value) if decl.kind is dict else str(value).lower() if decl.kind is bool else str(value)


def _serve(*argv: str) -> ServeSettings:
    args = build_parser().parse_args(["serve", *argv])
    return ServeSettings.from_env({}, config=args.config, **flag_values(args))


def _assert_lands(settings: ServeSettings, decl: Setting, expected: object) -> None:
    value = getattr(settings, decl.name)
    assert value == expected
    assert isinstance(value, decl.kind) and (decl.kind is not int or not isinstance(value, bool))


# --- every setting, every way ---------------------------------------------------------------------


@pytest.mark.parametrize("decl", [d for d in SETTINGS if d.flag or d.positional], ids=lambda d: d.name)
def test_every_setting_with_a_flag_can_be_given_by_flag(decl: Setting) -> None:
    value = _other(decl)
    if decl.positional:
        argv = [_text(decl, value)]
    elif decl.kind is bool:
        argv = [decl.flag if value else "--no-" + str(decl.flag).removeprefix("--")]
    elif decl.from_flag is not None:
        argv, value = [str(decl.flag), "logs"], decl.from_flag("logs")
    else:
        argv = [str(decl.flag), _text(decl, value)]
    _assert_lands(_serve(*argv), decl, value)


@pytest.mark.parametrize("decl", SETTINGS, ids=lambda d: d.name)
def test_every_setting_can_be_given_by_its_environment_variable(decl: Setting) -> None:
    value = _other(decl)
    assert decl.env == f"ENGINE_{decl.name.upper()}"
    _assert_lands(ServeSettings.from_env({decl.env: _text(decl, value)}), decl, value)


@pytest.mark.parametrize("decl", SETTINGS, ids=lambda d: d.name)
def test_every_setting_can_be_given_in_engine_yaml(decl: Setting, tmp_path: Path) -> None:
    value = _other(decl)
    config = tmp_path / "my.yaml"
    config.write_text(yaml.safe_dump({decl.yaml_key: str(value) if decl.kind is Path else value}))
    _assert_lands(ServeSettings.from_env({}, config=config), decl, value)


def test_the_flags_of_today_keep_working(tmp_path: Path) -> None:
    settings = _serve(
        str(tmp_path), "--grace", "3", "--drain-delay", "1", "--max-queue-wait", "0.25", "--max-queue", "9",
        "--reload-interval", "5", "--max-connection-age", "60", "--no-uvloop", "--request-log", "logs/",
    )  # fmt: skip
    assert (settings.graphs, settings.grace_s, settings.drain_delay_s) == (tmp_path, 3.0, 1.0)
    assert (settings.max_queue_wait_s, settings.max_queue, settings.uvloop) == (0.25, 9, False)
    assert (settings.reload_interval_s, settings.max_connection_age_s) == (5.0, 60.0)
    assert settings.request_log == {"sink": "jsonl", "directory": "logs/"}


def test_a_mapping_without_a_flag_has_none() -> None:
    assert BY_NAME["feature_sources"].flag is None
    assert "--feature-sources" not in build_parser().format_help()


def test_precedence_file_then_env_then_flags(tmp_path: Path) -> None:
    config = tmp_path / "engine.yaml"
    config.write_text(
        "port: 9001\ngrace_s: 20\nmetrics_port: 9002\ntracing: {exporter: otlp, sample_ratio: 0.05}\n"
    )
    settings = ServeSettings.from_env({"ENGINE_CONFIG": str(config), "ENGINE_GRACE_S": "30"}, port=9100)
    assert settings.port == 9100  # flag beats file
    assert settings.grace_s == 30.0  # env beats file
    assert settings.metrics_port == 9002 and settings.trace_exporter == "otlp"
    assert settings.trace_sample_ratio == 0.05


def test_a_flag_beats_the_environment_through_the_parser(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "engine.yaml"
    config.write_text("max_batch_size: 5\nreflection: false\n")
    monkeypatch.setenv("ENGINE_MAX_BATCH_SIZE", "6")
    args = build_parser().parse_args(
        ["serve", "--config", str(config), "--reflection", "--max-batch-size", "7"]
    )
    settings = ServeSettings.from_env(config=args.config, **flag_values(args))
    assert (settings.max_batch_size, settings.reflection) == (7, True)


# --- refusals -------------------------------------------------------------------------------------


def test_unknown_setting_in_the_file_suggests_a_name(tmp_path: Path) -> None:
    config = tmp_path / "engine.yaml"
    config.write_text("metric_port: 9002\n")
    with pytest.raises(ValueError, match="unknown setting 'metric_port'; did you mean 'metrics_port'"):
        ServeSettings.from_env({}, config=config)
    config.write_text("tracing: {exportr: otlp}\n")
    with pytest.raises(
        ValueError, match=r"unknown setting 'tracing\.exportr'; did you mean 'tracing\.exporter'"
    ):
        ServeSettings.from_env({}, config=config)


def test_bad_values_name_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="ENGINE_PORT='eighty' is not a valid int"):
        ServeSettings.from_env({"ENGINE_PORT": "eighty"})
    with pytest.raises(ValueError, match="ENGINE_TRACE_EXPORTER='jaeger' is not a valid choice of none"):
        ServeSettings.from_env({"ENGINE_TRACE_EXPORTER": "jaeger"})
    config = tmp_path / "engine.yaml"
    config.write_text("uvloop: maybe\n")
    with pytest.raises(ValueError, match=r"engine.yaml: uvloop: 'maybe' is not a valid bool"):
        ServeSettings.from_env({}, config=config)
    config.write_text("port: true\n")
    with pytest.raises(ValueError, match="port: True is not a valid int"):
        ServeSettings.from_env({}, config=config)


def test_a_config_file_that_is_not_a_mapping_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "engine.yaml"
    config.write_text("- port\n")
    with pytest.raises(ValueError, match="expected a mapping"):
        ServeSettings.from_env({}, config=config)


def test_an_unknown_override_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="unknown settings: prot"):
        ServeSettings.from_env({}, prot=1)


# --- resolution -----------------------------------------------------------------------------------


def test_zero_workers_means_one_per_usable_core() -> None:
    import os

    assert ServeSettings.from_env({"ENGINE_WORKERS": "0"}).workers == len(os.sched_getaffinity(0))


def test_workers_default_to_one_per_usable_core_and_one_on_a_random_port() -> None:
    import os

    assert ServeSettings.from_env({}).workers == len(os.sched_getaffinity(0))
    assert ServeSettings.from_env({}, port=0).workers == 1  # a random port cannot be shared
    assert ServeSettings.from_env({"ENGINE_WORKERS": "1"}).workers == 1
    assert ServeSettings.from_env({}, workers=3, port=0).workers == 3  # asked for: refused later, loudly


# --- the hand-over to workers ---------------------------------------------------------------------


def test_json_round_trips_every_setting_exactly() -> None:
    changed = ServeSettings(**{decl.name: _other(decl) for decl in SETTINGS})
    for decl in SETTINGS:
        assert getattr(changed, decl.name) != decl.default, decl.name
    back = ServeSettings.from_json(changed.to_json())
    assert back == changed
    for decl in SETTINGS:
        assert type(getattr(back, decl.name)) is type(getattr(changed, decl.name)), decl.name
    assert ServeSettings.from_json(ServeSettings().to_json()) == ServeSettings()


def test_from_json_takes_every_setting_and_only_those() -> None:
    data = json.loads(ServeSettings().to_json())
    with pytest.raises(ValueError, match="every setting"):
        ServeSettings.from_json(json.dumps({**data, "extra": 1}))
    del data["port"]
    with pytest.raises(ValueError, match="every setting"):
        ServeSettings.from_json(json.dumps(data))


def test_workers_get_the_resolved_settings_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    handed: list[ServeSettings] = []
    fleet = types.ModuleType("engine.fleet.supervisor")
    fleet.run_supervisor = lambda settings: handed.append(settings) or 7  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "engine.fleet.supervisor", fleet)
    (tmp_path / "graphs").mkdir()
    config = tmp_path / "my.yaml"
    config.write_text("max_batch_size: 5\nreflection: false\nrequest_log: {sink: jsonl, directory: logs}\n")
    code = main(
        ["serve", str(tmp_path / "graphs"), "--workers", "2", "--port", "9123", "--config", str(config)]
    )
    assert code == 7
    (settings,) = handed
    assert (settings.workers, settings.port, settings.max_batch_size, settings.reflection) == (
        2,
        9123,
        5,
        False,
    )
    assert settings.request_log == {"sink": "jsonl", "directory": "logs"}


# --- the reference ------------------------------------------------------------------------------


def test_the_settings_reference_is_generated_from_the_declarations() -> None:
    committed = (ROOT / "docs" / "configuration.md").read_text()
    assert committed == markdown_document(), (
        "docs/configuration.md is out of date: .venv/bin/python -m engine.config > docs/configuration.md"
    )
    table = [line for line in committed.splitlines() if line.startswith("| ") and "ENGINE_" in line]
    assert len(table) == len(SETTINGS)
    for decl, row in zip(SETTINGS, table, strict=True):
        assert f"`{decl.env}`" in row and f"`{decl.yaml_key}`" in row
        assert decl.flag is None or f"`{decl.flag}" in row
