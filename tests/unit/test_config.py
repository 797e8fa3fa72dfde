"""Settings: defaults < config file < ENGINE_* variables < flags, each checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import ServeSettings


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


def test_unknown_setting_in_the_file_suggests_a_name(tmp_path: Path) -> None:
    config = tmp_path / "engine.yaml"
    config.write_text("metric_port: 9002\n")
    with pytest.raises(ValueError, match="unknown setting 'metric_port'; did you mean 'metrics_port'"):
        ServeSettings.from_env({}, config=config)


def test_bad_values_name_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="ENGINE_PORT='eighty' is not a valid int"):
        ServeSettings.from_env({"ENGINE_PORT": "eighty"})
    config = tmp_path / "engine.yaml"
    config.write_text("uvloop: maybe\n")
    with pytest.raises(ValueError, match="ENGINE_UVLOOP='maybe'"):
        ServeSettings.from_env({}, config=config)


def test_a_config_file_that_is_not_a_mapping_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "engine.yaml"
    config.write_text("- port\n")
    with pytest.raises(ValueError, match="expected a mapping"):
        ServeSettings.from_env({}, config=config)


def test_zero_workers_means_one_per_usable_core() -> None:
    import os

    assert ServeSettings.from_env({"ENGINE_WORKERS": "0"}).workers == len(os.sched_getaffinity(0))


def test_workers_default_to_one_per_usable_core_and_one_on_a_random_port() -> None:
    import os

    assert ServeSettings.from_env({}).workers == len(os.sched_getaffinity(0))
    assert ServeSettings.from_env({}, port=0).workers == 1  # a random port cannot be shared
    assert ServeSettings.from_env({"ENGINE_WORKERS": "1"}).workers == 1
    assert ServeSettings.from_env({}, workers=3, port=0).workers == 3  # asked for: refused later, loudly
