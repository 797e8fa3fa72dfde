"""The published JSON Schemas (schemas/): generated from the declarations, accepting every example
and refusing typos, and used by ``engine validate``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from engine.config.schema import schema_text as engine_schema_text
from engine.graph.schema import schema_text as graph_schema_text
from tests.integration.test_cli_init import engine as run_engine
from tests.integration.test_string_routing import GRAPH as TEXT_ROUTING
from tests.integration.test_zero_rows import GRAPH as EVERY_KIND
from tests.unit.test_graph_draw import GRAPH as MARKED

ROOT = Path(__file__).resolve().parents[2]
GRAPH_SCHEMA = json.loads((ROOT / "schemas" / "graph.schema.json").read_text())
ENGINE_SCHEMA = json.loads((ROOT / "schemas" / "engine.schema.json").read_text())


def _errors(schema: dict[str, object], data: object) -> list[str]:
    return [e.message for e in jsonschema.Draft202012Validator(schema).iter_errors(data)]


def test_the_committed_schemas_are_what_the_declarations_make() -> None:
    assert (ROOT / "schemas" / "graph.schema.json").read_text() == graph_schema_text()
    assert (ROOT / "schemas" / "engine.schema.json").read_text() == engine_schema_text()
    for schema in (GRAPH_SCHEMA, ENGINE_SCHEMA):
        jsonschema.Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize("path", sorted((ROOT / "graphs").glob("*/graph.yaml")), ids=lambda p: p.parent.name)
def test_every_example_graph_fits(path: Path) -> None:
    assert _errors(GRAPH_SCHEMA, yaml.safe_load(path.read_text())) == []


@pytest.mark.parametrize("text", [EVERY_KIND, TEXT_ROUTING, MARKED], ids=["every-kind", "text", "marks"])
def test_graphs_using_every_node_kind_and_option_fit(text: str) -> None:
    assert _errors(GRAPH_SCHEMA, yaml.safe_load(text)) == []


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("version: 1", "versoin: 1"),
        ("    timeout: 20ms", "    timout: 20ms"),
        ("datatype: FP32\n", "datatype: FP23\n"),
        ("transform: concat", "transform: concatt"),
        ("on_error: default", "on_error: retry"),
        ("combine: mean", "combine: mean\n    weights: [1, 2]"),
        ("sample: 1.0\n    timeout", "sample: 2.0\n    timeout"),
    ],
)
def test_typos_do_not_fit(old: str, new: str) -> None:
    text = (ROOT / "graphs" / "fraud" / "graph.yaml").read_text()
    assert old in text, old
    assert _errors(GRAPH_SCHEMA, yaml.safe_load(text.replace(old, new, 1))), new


def test_server_configs_fit_and_typos_do_not() -> None:
    for path in (ROOT / "graphs" / "engine.yaml", ROOT / "deploy" / "engine.yaml"):
        assert _errors(ENGINE_SCHEMA, yaml.safe_load(path.read_text())) == [], path
    assert _errors(ENGINE_SCHEMA, {"workrs": 2})
    assert _errors(ENGINE_SCHEMA, {"tracing": {"exportr": "otlp"}})
    assert _errors(ENGINE_SCHEMA, {"grace_s": "soon"})
    assert _errors(ENGINE_SCHEMA, {"tracing": {"exporter": "otlp"}, "workers": 2}) == []


def test_validate_checks_the_config_against_its_schema(tmp_path: Path, example_graphs: Path) -> None:
    repo = tmp_path / "graphs"
    (repo / "quickstart").mkdir(parents=True)
    for file in (example_graphs / "quickstart").iterdir():
        (repo / "quickstart" / file.name).write_bytes(file.read_bytes())
    (repo / "engine.yaml").write_text("workrs: 2\ntracing:\n  exportr: otlp\n")
    result = run_engine("validate", str(repo))
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"{repo / 'engine.yaml'}:1:1: error: unknown key 'workrs'; did you mean 'workers'?",
        f"{repo / 'engine.yaml'}:3:3: error: unknown key 'exportr'; did you mean 'exporter'?",
    ]


def test_schema_command_prints_the_committed_file() -> None:
    printed = subprocess.run(
        [sys.executable, "-m", "engine.config", "--schema"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert printed == (ROOT / "schemas" / "engine.schema.json").read_text()
