"""What a newcomer relies on: the entry points, the Makefile targets, the image's command."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_console_scripts_point_at_real_functions() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["engine"] == "engine.cli:main"
    from engine.cli import main

    assert callable(main)


def test_makefile_has_the_documented_targets() -> None:
    makefile = (ROOT / "Makefile").read_text()
    for target in ("serve", "test", "bench", "proto", "lint"):
        assert re.search(rf"^{target}:", makefile, re.M), target


def test_readme_quick_start_is_make_serve_and_make_test() -> None:
    readme = (ROOT / "README.md").read_text()
    quick = readme.split("## Quick start", 1)[1].split("##", 1)[0]
    commands = re.findall(r"^make \w+", quick, re.M)
    assert commands == ["make serve", "make test"]


def _instruction(dockerfile: str, name: str) -> list[str]:
    lines = [line for line in dockerfile.splitlines() if line.startswith(name + " ")]
    return json.loads(lines[-1][len(name) + 1 :])


def _instruction_words(dockerfile: str, name: str) -> list[str]:
    lines = [line for line in dockerfile.splitlines() if line.startswith(name + " ")]
    return lines[-1][len(name) + 1 :].split()


def test_the_image_runs_engine_serve_on_graphs_at_port_8001() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert _instruction(dockerfile, "ENTRYPOINT") + _instruction(dockerfile, "CMD") == [
        "engine",
        "serve",
        "/graphs",
    ]
    assert "8001" in _instruction_words(dockerfile, "EXPOSE") and "ENGINE_PORT=8001" in dockerfile
    assert "USER " in dockerfile
    # The same command line the integration tests run parses with the image's environment.
    help_text = subprocess.run(
        [sys.executable, "-m", "engine.cli", "serve", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "--port" in help_text and "--workers" in help_text


def test_ci_fails_when_no_tests_are_collected() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    makefile = (ROOT / "Makefile").read_text()
    assert "make test" in ci
    assert "-eq 5" in makefile and "exit 1" in makefile


def _pyproject() -> dict[str, object]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]  # type: ignore[no-any-return]


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0].lower() for r in requirements}


def test_the_load_tool_and_the_model_builders_are_extras_not_server_dependencies() -> None:
    project = _pyproject()
    runtime = _names(project["dependencies"])  # type: ignore[arg-type]
    extras: dict[str, list[str]] = project["optional-dependencies"]  # type: ignore[assignment]
    assert not runtime & {"matplotlib", "hdrhistogram", "scikit-learn", "skl2onnx", "pyarrow"}
    assert _names(extras["loadtest"]) == {"matplotlib", "hdrhistogram"}
    assert _names(extras["parquet"]) == {"pyarrow"}
    # the example models' sha256 only stay put when their builders are pinned exactly
    assert all("==" in r for r in extras["models"]), extras["models"]
    for pin in extras["models"]:
        assert pin in extras["dev"] or any(d.startswith(pin) for d in extras["dev"]), pin


def test_the_image_has_the_compiled_wheel_the_parquet_extra_and_the_pinned_model_builders() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    build = dockerfile.split(" AS build", 1)[1].split(" AS models", 1)[0]
    # the wheel is built with the hot path compiled (setup.py), in a venv the image then drops
    assert "ENGINE_COMPILE=1 /opt/compile/bin/pip wheel --no-build-isolation" in build
    assert '/opt/engine/bin/pip install --no-compile "$(ls /wheels/graph_engine-*.whl)[parquet]"' in build
    assert "rm -rf /opt/compile /wheels" in build
    assert not re.search(r"pip install[^\n]*loadtest", dockerfile)
    models_stage = dockerfile.split(" AS models", 1)[1].split(" AS runtime", 1)[0]
    for pin in _pyproject()["optional-dependencies"]["models"]:  # type: ignore[index]
        assert f'"{pin}"' in models_stage, pin


def test_the_server_runs_without_the_load_tools_dependencies() -> None:
    script = (
        "import sys\n"
        "for name in ('matplotlib', 'hdrh', 'sklearn', 'skl2onnx'):\n"
        "    sys.modules[name] = None  # an import of any of them now fails\n"
        "import engine.server, engine.cli.command\n"
        "from engine.cli import main\n"
        "assert main(['validate', 'graphs/quickstart']) == 0\n"
        "from loadtest.entry import main as loadtest\n"
        "sys.exit(loadtest(['check', 'x.yaml']))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == (
        "loadtest: hdrhistogram, matplotlib not installed; the load tool is an extra: "
        "pip install 'graph-engine[loadtest]'"
    )
