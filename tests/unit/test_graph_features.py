"""The ``features`` node kind: reading, validation against the catalog, and execution semantics.

Sources are real (``StaticSource`` over a CSV in tmp_path, behind the real ``FeatureCatalog``);
the "slow" and "down" stores are thin wrappers that delay or raise like a stalled or refused
connection would (the adapter tests cover the real stalled TCP proxy against Redis).
"""

from __future__ import annotations

import asyncio
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from adapters.registry import FeatureCatalog
from adapters.static import StaticSource
from engine.errors import DeadlineExceeded, DependencyUnavailable, InternalError
from engine.execution import PlanRunner
from engine.graph import check_graph, load_graph
from engine.graph.values.plan import FeatureStep
from engine.interfaces import FeatureBatch, FeatureField, FeatureStatus, NodeEvent
from engine.tensors import DataType
from tests.fakes import FakeModel, FakeRuntimeFactory, linear_model
from tests.unit.graph_cases import line_of, only_error, write_graph

USERS_CSV = "user_id,age_days,txn_24h,country\nu1,400,3,DE\nu2,20,9,FR\n7,1,1,US\n"

GRAPH = """\
graph: scored
inputs:
  user_id: {datatype: BYTES, shape: [-1, 1]}
  amount: {datatype: FP32, shape: [-1, 1]}
nodes:
  user:
    features: users
    key: inputs.user_id
    fields:
      age_days: {datatype: FP32, default: -1}
      txn_24h: {datatype: FP32, default: 0}
    timeout: 50ms
    on_error: default
  x:
    transform: concat
    inputs: [inputs.amount, user.age_days, user.txn_24h]
  model: {model: m.onnx, inputs: {x: x}}
outputs:
  y: model.y
  age: user.age_days
"""


class Slow:
    """A source that answers after ``delay_s`` (a store that stalls)."""

    def __init__(self, inner: StaticSource, delay_s: float) -> None:
        self.name, self.inner, self.delay_s = inner.name, inner, delay_s
        self.cancelled = 0

    def schema(self):  # type: ignore[no-untyped-def]
        return self.inner.schema()

    async def fetch(
        self, keys: Sequence[str], fields: Sequence[FeatureField], *, max_age_s: float | None = None
    ) -> FeatureBatch:
        try:
            await asyncio.sleep(self.delay_s)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return await self.inner.fetch(keys, fields, max_age_s=max_age_s)

    async def close(self) -> None:
        return None


class Down(Slow):
    """A source whose store refuses connections."""

    def __init__(self, inner: StaticSource, error: Exception) -> None:
        super().__init__(inner, 0.0)
        self.error = error

    async def fetch(self, keys, fields, *, max_age_s=None):  # type: ignore[no-untyped-def]
        raise self.error


def _users(tmp_path: Path, schema: dict[str, DataType] | None = None) -> StaticSource:
    path = tmp_path / "users.csv"
    path.write_text(USERS_CSV)
    return StaticSource("users", path, key_column="user_id", schema=schema)


def _models() -> dict[str, FakeModel | Exception]:
    return {"m.onnx": linear_model(width=3, scale=1.0)}


def _load(tmp_path: Path, catalog: FeatureCatalog, text: str = GRAPH):  # type: ignore[no-untyped-def]
    models = _models()
    return load_graph(write_graph(tmp_path, text, models, name="scored"), FakeRuntimeFactory(models), catalog)


def _diagnose(tmp_path: Path, catalog: FeatureCatalog | None, text: str) -> list:  # type: ignore[type-arg]
    models = _models()
    path = write_graph(tmp_path, text, models, name="scored")
    return check_graph(
        path.read_text(),
        filename="graph.yaml",
        graph_dir=path.parent,
        runtimes=FakeRuntimeFactory(models),
        features=catalog,
    )


def _keys(*ids: object) -> np.ndarray:
    out = np.empty((len(ids), 1), dtype=np.object_)
    out[:, 0] = [i.encode() if isinstance(i, str) else i for i in ids]
    return out


class Events:
    def __init__(self) -> None:
        self.events: list[NodeEvent] = []

    def on_node(self, event: NodeEvent) -> None:
        self.events.append(event)


# --- reading and validation ------------------------------------------------------------------


def test_valid_graph_compiles_to_a_feature_step_with_field_outputs(tmp_path: Path) -> None:
    catalog = FeatureCatalog({"users": _users(tmp_path)})
    graph = _load(tmp_path, catalog)
    step = graph.plan.stages[0][0]
    assert isinstance(step, FeatureStep)
    assert step.source_name == "users" and step.use_defaults and step.timeout_s == pytest.approx(0.05)
    assert [f.name for f in step.fields] == ["age_days", "txn_24h"]
    assert [graph.plan.slot_names[s] for s in step.outputs] == ["user.age_days", "user.txn_24h"]
    info = {n.name: n for n in graph.plan.nodes}["user"]
    assert info.kind == "features" and info.detail == "users: age_days, txn_24h"
    assert info.inputs == ("inputs.user_id",)
    age = next(o for o in graph.plan.outputs if o.name == "age")
    assert age.datatype is DataType.FP32 and age.shape == (-1, 1)


@pytest.mark.parametrize(
    ("old", "new", "message", "needle"),
    [
        ("features: users", "features: usrs", "unknown feature source 'usrs'; did you mean 'users'?", "usrs"),
        ("key: inputs.user_id", "key: inputs.uid", "unknown graph input 'uid'", "inputs.uid"),
        (
            "key: inputs.user_id",
            "key: inputs.amount",
            "key 'inputs.amount' is FP32; a key is text (BYTES) or a whole number",
            "inputs.amount",
        ),
        (
            "age_days: {datatype: FP32, default: -1}",
            "age_days: {datatype: FP32, default: old}",
            "field 'age_days' is FP32: its default must be a number, got 'old'",
            "default: old",
        ),
        (
            "age_days: {datatype: FP32, default: -1}",
            "age_days: {datatype: INT8, default: 1000}",
            "field 'age_days': default 1000 does not fit INT8",
            "default: 1000",
        ),
        (
            "age_days: {datatype: FP32, default: -1}",
            "age_days: {datatype: FP23, default: -1}",
            "unknown datatype 'FP23'; did you mean 'FP32'?",
            "FP23",
        ),
        (
            "age_days: {datatype: FP32, default: -1}",
            "age_days: {datatype: FP32}",
            "field 'age_days' needs a 'default'",
            "age_days:",
        ),
        (
            "timeout: 50ms",
            "timeout: 50ms\n    max_age: soon",
            "'max_age' must be a positive duration",
            "soon",
        ),
        ("timeout: 50ms", "timeout: 50ms\n    cache: {tll: 30s}", "unknown key 'tll' in 'cache'", "tll"),
        ("timeout: 50ms", "timeout: 50ms\n    keys: x", "unknown key 'keys'", "keys: x"),
        (
            "on_error: default",
            "on_error: {default: 0}",
            "a features node's defaults are per field",
            "on_error:",
        ),
    ],
)
def test_mistakes_are_reported_at_their_line(
    tmp_path: Path, old: str, new: str, message: str, needle: str
) -> None:
    catalog = FeatureCatalog({"users": _users(tmp_path)})
    text = GRAPH.replace(old, new)
    error = only_error(_diagnose(tmp_path, catalog, text))
    assert message in error.message
    assert error.line == line_of(text, needle)


def test_fields_are_checked_against_a_declared_schema(tmp_path: Path) -> None:
    schema = {"age_days": DataType.FP64, "txn_count": DataType.INT32, "country": DataType.BYTES}
    catalog = FeatureCatalog({"users": _users(tmp_path, schema)})
    text = GRAPH.replace("txn_24h: {datatype: FP32, default: 0}", "txn_cuont: {datatype: FP32, default: 0}")
    text = text.replace("user.txn_24h", "user.txn_cuont").replace(
        "age_days: {datatype: FP32, default: -1}", 'age_days: {datatype: BYTES, default: "?"}'
    )
    errors = [d for d in _diagnose(tmp_path, catalog, text) if d.severity == "error"]
    messages = sorted(d.message for d in errors)
    assert any("has no field 'txn_cuont'; did you mean 'txn_count'?" in m for m in messages), messages
    assert any("'age_days' is FP64 in source 'users' but BYTES here" in m for m in messages), messages


def test_no_catalog_says_where_sources_are_declared(tmp_path: Path) -> None:
    error = only_error(_diagnose(tmp_path, None, GRAPH))
    assert "unknown feature source 'users'" in error.message
    assert "feature_sources in engine.yaml" in error.message


def test_missing_timeout_is_a_warning(tmp_path: Path) -> None:
    catalog = FeatureCatalog({"users": _users(tmp_path)})
    diagnostics = _diagnose(tmp_path, catalog, GRAPH.replace("    timeout: 50ms\n", ""))
    assert [d.severity for d in diagnostics] == ["warning"]
    assert "has no 'timeout'" in diagnostics[0].message


def test_bare_default_is_only_for_features_nodes(tmp_path: Path) -> None:
    catalog = FeatureCatalog({"users": _users(tmp_path)})
    text = GRAPH.replace(
        "  model: {model: m.onnx, inputs: {x: x}}",
        "  model: {model: m.onnx, inputs: {x: x}, on_error: default}",
    )
    error = only_error(_diagnose(tmp_path, catalog, text))
    assert "'on_error: default' needs a value here" in error.message


def test_node_cache_is_shared_per_source_and_ttl(tmp_path: Path) -> None:
    catalog = FeatureCatalog({"users": _users(tmp_path)})
    text = GRAPH.replace("timeout: 50ms", "timeout: 50ms\n    cache: {ttl: 30s}")
    first = _load(tmp_path, catalog, text).plan.stages[0][0]
    second = _load(tmp_path, catalog, text).plan.stages[0][0]
    assert isinstance(first, FeatureStep) and isinstance(second, FeatureStep)
    assert first.source is second.source and first.source is not catalog.get("users")
    assert catalog.cached("users", 30.0) is first.source and catalog.cached("users", 10.0) is not first.source


# --- execution ----------------------------------------------------------------------------------


async def test_rows_get_their_own_values_and_statuses(tmp_path: Path) -> None:
    catalog = FeatureCatalog({"users": _users(tmp_path)})
    runner = PlanRunner(_load(tmp_path, catalog).plan)
    events = Events()
    amount = np.array([[10.0], [20.0], [30.0]], np.float32)
    y, age = await runner.run([_keys("u2", "nobody", "u1"), amount], observer=events)
    assert age.tolist() == [[20.0], [-1.0], [400.0]]
    x = np.concatenate([amount, [[20.0], [-1.0], [400.0]], [[9.0], [0.0], [3.0]]], axis=1)
    np.testing.assert_allclose(y, x.sum(axis=1, keepdims=True))  # linear_model: scale * row sum
    (event,) = [e for e in events.events if e.node == "user"]
    assert event.kind == "features" and event.source == "users" and event.rows == 3
    assert event.feature_status is not None
    assert event.feature_status["age_days"].tolist() == [
        FeatureStatus.PRESENT,
        FeatureStatus.MISSING,
        FeatureStatus.PRESENT,
    ]
    stats = runner.stats.nodes["user"]
    assert (
        stats.feature_values[FeatureStatus.PRESENT] == 4 and stats.feature_values[FeatureStatus.MISSING] == 2
    )


async def test_integer_keys_are_read_as_text(tmp_path: Path) -> None:
    catalog = FeatureCatalog({"users": _users(tmp_path)})
    text = GRAPH.replace(
        "user_id: {datatype: BYTES, shape: [-1, 1]}", "user_id: {datatype: INT64, shape: [-1]}"
    )
    runner = PlanRunner(_load(tmp_path, catalog, text).plan)
    _, age = await runner.run([np.array([7, 8], np.int64), np.ones((2, 1), np.float32)])
    assert age.tolist() == [[1.0], [-1.0]]


async def test_a_stalled_store_gets_defaults_flagged_timed_out(tmp_path: Path) -> None:
    slow = Slow(_users(tmp_path), delay_s=5.0)
    runner = PlanRunner(_load(tmp_path, FeatureCatalog({"users": slow})).plan)
    events = Events()
    start = time.monotonic()
    _, age = await runner.run([_keys("u1"), np.ones((1, 1), np.float32)], observer=events)
    assert time.monotonic() - start < 4.0  # cut off by the 50 ms node timeout, not the 5 s stall
    assert age.tolist() == [[-1.0]] and slow.cancelled == 1
    (event,) = [e for e in events.events if e.node == "user"]
    assert event.feature_status is not None and event.feature_status["txn_24h"].tolist() == [
        FeatureStatus.TIMED_OUT
    ]


async def test_a_stalled_store_fails_with_unavailable_when_asked(tmp_path: Path) -> None:
    slow = Slow(_users(tmp_path), delay_s=5.0)
    text = GRAPH.replace("on_error: default", "on_error: fail")
    runner = PlanRunner(_load(tmp_path, FeatureCatalog({"users": slow}), text).plan)
    with pytest.raises(DependencyUnavailable) as caught:
        await runner.run([_keys("u1"), np.ones((1, 1), np.float32)])
    assert caught.value.node == "user"
    assert "feature source 'users' did not answer within its timeout of 50 ms" in caught.value.message
    assert runner.stats.nodes["user"].fail.count == 1


async def test_the_request_deadline_wins_over_defaults(tmp_path: Path) -> None:
    slow = Slow(_users(tmp_path), delay_s=30.0)
    text = GRAPH.replace("timeout: 50ms", "timeout: 20s")  # the deadline (0.3 s) is what runs out
    runner = PlanRunner(_load(tmp_path, FeatureCatalog({"users": slow}), text).plan)
    with pytest.raises(DeadlineExceeded) as caught:
        await runner.run([_keys("u1"), np.ones((1, 1), np.float32)], deadline=time.monotonic() + 0.3)
    assert "request deadline exceeded while node 'user' was fetching features" in caught.value.message


@pytest.mark.parametrize("use_defaults", [True, False])
async def test_a_store_that_is_down(tmp_path: Path, use_defaults: bool) -> None:
    down = Down(_users(tmp_path), DependencyUnavailable("feature source 'users': connection refused"))
    text = GRAPH if use_defaults else GRAPH.replace("on_error: default", "on_error: fail")
    runner = PlanRunner(_load(tmp_path, FeatureCatalog({"users": down}), text).plan)
    events = Events()
    if use_defaults:
        _, age = await runner.run([_keys("u1", "u2"), np.ones((2, 1), np.float32)], observer=events)
        assert age.tolist() == [[-1.0], [-1.0]]
        (event,) = [e for e in events.events if e.node == "user"]
        assert event.feature_status is not None
        assert set(event.feature_status["age_days"].tolist()) == {FeatureStatus.FAILED}
    else:
        with pytest.raises(DependencyUnavailable) as caught:
            await runner.run([_keys("u1"), np.ones((1, 1), np.float32)])
        assert caught.value.node == "user" and "connection refused" in caught.value.message


async def test_an_adapter_bug_is_internal_unless_defaults_are_allowed(tmp_path: Path) -> None:
    down = Down(_users(tmp_path), KeyError("boom"))
    text = GRAPH.replace("on_error: default", "on_error: fail")
    runner = PlanRunner(_load(tmp_path, FeatureCatalog({"users": down}), text).plan)
    with pytest.raises(InternalError) as caught:
        await runner.run([_keys("u1"), np.ones((1, 1), np.float32)])
    assert "feature source 'users' failed: KeyError" in caught.value.message


async def test_bytes_fields_and_defaults(tmp_path: Path) -> None:
    catalog = FeatureCatalog({"users": _users(tmp_path)})
    text = textwrap.dedent(
        """\
        graph: scored
        inputs:
          user_id: {datatype: BYTES, shape: [-1, 1]}
        nodes:
          user:
            features: users
            key: inputs.user_id
            fields:
              country: {datatype: BYTES, default: "??"}
            timeout: 1s
        outputs:
          country: user.country
        """
    )
    runner = PlanRunner(_load(tmp_path, catalog, text).plan)
    (country,) = await runner.run([_keys("u2", "zz")])
    assert country.shape == (2, 1) and country.tolist() == [[b"FR"], [b"??"]]
