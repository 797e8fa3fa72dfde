"""The SLA file: YAML → a typed, validated :class:`Sla`.

Every problem in the file is collected (with the key's path, and a "did you
mean" for misspelt keys) and raised together as one :class:`SlaError`; the CLI
prints it and exits 2. The full format is documented in ``docs/loadtest.md``.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, overload

import yaml

from loadtest import units

GENERATOR_KINDS = ("uniform", "normal", "int", "choice", "constant", "bool", "text")
ARRIVALS = ("poisson", "uniform")
STATUS_CODES = (
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
)
METRIC_BOUNDS = ("max_increase", "min_increase", "max", "min", "max_rate", "max_ratio", "min_ratio")

_Parsed = TypeVar("_Parsed")
_Default = TypeVar("_Default")


class SlaError(Exception):
    """The SLA file is misconfigured; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str], source: str = "SLA") -> None:
        self.problems = problems
        super().__init__(f"{source} is misconfigured:\n" + "\n".join(f"  - {p}" for p in problems))


@dataclass(frozen=True)
class Target:
    url: str
    graph: str
    version: str = ""
    metrics: str | None = None
    timeout_s: float = 10.0


@dataclass(frozen=True)
class InputGenerator:
    kind: str  # one of GENERATOR_KINDS, or "default"
    args: Any = None
    shape: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Source:
    kind: str  # "generate" | "jsonl" | "request_log"
    path: Path | None = None
    inputs: dict[str, InputGenerator] = field(default_factory=dict)
    batch: int = 1
    pool: int = 256
    seed: int = 0


@dataclass(frozen=True)
class Stage:
    start_rate: float
    end_rate: float
    duration_s: float

    @property
    def ramp(self) -> bool:
        return self.start_rate != self.end_rate


@dataclass(frozen=True)
class Load:
    stages: tuple[Stage, ...]
    arrivals: str = "poisson"
    warmup_s: float = 0.0
    processes: int = 1
    max_in_flight: int = 10_000
    max_lag_s: float = 0.010
    seed: int = 1

    @property
    def duration_s(self) -> float:
        return sum(s.duration_s for s in self.stages)


@dataclass(frozen=True)
class MetricAssertion:
    metric: str
    labels: dict[str, str]
    bounds: dict[str, float]  # keys from METRIC_BOUNDS
    quantile: float | None = None  # histogram quantile over the run's increase
    over_metric: str | None = None  # denominator for max_ratio / min_ratio
    over_labels: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        labels = ",".join(f'{k}="{v}"' for k, v in self.labels.items())
        name = f"{self.metric}{{{labels}}}" if labels else self.metric
        return f"q{self.quantile:g}({name})" if self.quantile is not None else name


@dataclass(frozen=True)
class Assertions:
    latency_us: dict[float, float] = field(default_factory=dict)  # percentile → bound in µs
    latency_of: str = "ok"  # "ok" | "all"
    max_error_rate: float | None = None
    max_error_rate_by_code: dict[str, float] = field(default_factory=dict)
    min_rate: float | None = None
    server: tuple[MetricAssertion, ...] = ()


@dataclass(frozen=True)
class Capacity:
    start: float = 50.0
    max: float = 100_000.0
    step_s: float = 10.0
    warmup_s: float = 2.0
    precision: float = 0.05
    max_steps: int = 12
    min_rate_fraction: float = 0.95


@dataclass(frozen=True)
class Sla:
    name: str
    target: Target
    source: Source
    load: Load
    assertions: Assertions
    capacity: Capacity
    base_dir: Path = Path(".")


class _Reader:
    """Walks the YAML, collecting problems instead of stopping at the first."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def problem(self, path: str, message: str) -> None:
        self.problems.append(f"{path}: {message}" if path else message)

    def mapping(self, value: Any, path: str, allowed: tuple[str, ...]) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.problem(path, f"expected a mapping, got {type(value).__name__}")
            return {}
        for key in value:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=1)
                hint = f"; did you mean '{close[0]}'?" if close else f"; allowed: {', '.join(allowed)}"
                self.problem(_join(path, str(key)), f"unknown key{hint}")
        return value

    @overload
    def convert(self, path: str, value: object, parse: Callable[[Any], _Parsed]) -> _Parsed | None: ...

    @overload
    def convert(
        self, path: str, value: object, parse: Callable[[Any], _Parsed], default: _Default
    ) -> _Parsed | _Default: ...

    def convert(
        self, path: str, value: object, parse: Callable[[Any], object], default: object = None
    ) -> object:
        """``parse(value)``; ``default`` when the key is absent or (recorded as a problem) invalid."""
        if value is None:
            return default
        try:
            return parse(value)
        except (ValueError, TypeError) as exc:
            self.problem(path, str(exc))
            return default


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def load_sla(path: str | Path) -> Sla:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise SlaError([f"cannot read {path}: {exc.strerror}"], str(path)) from exc
    except yaml.YAMLError as exc:
        raise SlaError([f"not valid YAML: {exc}"], str(path)) from exc
    return parse_sla(raw, base_dir=path.parent, source=str(path))


def parse_sla(raw: Any, base_dir: Path = Path("."), source: str = "SLA") -> Sla:
    r = _Reader()
    top = r.mapping(raw, "", ("name", "target", "source", "load", "assertions", "capacity"))
    if raw is not None and not isinstance(raw, dict):
        raise SlaError(r.problems, source)
    target = _target(r, top.get("target"))
    name = str(top.get("name") or (target.graph if target else "sla"))
    requests = _source(r, top.get("source"), base_dir)
    load = _load(r, top.get("load"))
    assertions = _assertions(r, top.get("assertions"), target)
    capacity = _capacity(r, top.get("capacity"))
    if r.problems or target is None:  # no target is always a problem
        raise SlaError(r.problems, source)
    return Sla(name, target, requests, load, assertions, capacity, base_dir)


def _target(r: _Reader, raw: Any) -> Target | None:
    if raw is None:
        r.problem("target", "required: url (host:port of a V2 gRPC server) and graph")
        return None
    m = r.mapping(raw, "target", ("url", "graph", "version", "metrics", "timeout"))
    for key in ("url", "graph"):
        if not m.get(key):
            r.problem(f"target.{key}", "required")
    metrics = m.get("metrics")
    if metrics is not None and not str(metrics).startswith(("http://", "https://")):
        r.problem(
            "target.metrics", f"expected an http(s) URL like http://127.0.0.1:8002/metrics, got {metrics!r}"
        )
    timeout = r.convert("target.timeout", m.get("timeout"), units.seconds, 10.0)
    if timeout is not None and timeout <= 0:
        r.problem("target.timeout", "must be positive")
    return Target(
        url=str(m.get("url", "")).removeprefix("grpc://"),
        graph=str(m.get("graph", "")),
        version=str(m.get("version", "") or ""),
        metrics=str(metrics) if metrics else None,
        timeout_s=timeout or 10.0,
    )


def _source(r: _Reader, raw: Any, base_dir: Path) -> Source:
    m = r.mapping(raw, "source", ("generate", "jsonl", "request_log"))
    kinds = [k for k in ("generate", "jsonl", "request_log") if k in m]
    if len(kinds) > 1:
        r.problem("source", f"choose one of generate, jsonl, request_log (found {', '.join(kinds)})")
    if not kinds:
        return Source(kind="generate")  # every input from its default generator
    kind = kinds[0]
    if kind in ("jsonl", "request_log"):
        value = m[kind]
        if not isinstance(value, str) or not value:
            r.problem(f"source.{kind}", "expected a file path")
            return Source(kind=kind)
        path = Path(value) if Path(value).is_absolute() else base_dir / value
        if not path.is_file():
            r.problem(f"source.{kind}", f"file not found: {path}")
        return Source(kind=kind, path=path)
    g = r.mapping(m["generate"], "source.generate", ("inputs", "batch", "pool", "seed"))
    batch = r.convert("source.generate.batch", g.get("batch"), _positive_int, 1)
    pool = r.convert("source.generate.pool", g.get("pool"), _positive_int, 256)
    seed = r.convert("source.generate.seed", g.get("seed"), int, 0)
    inputs: dict[str, InputGenerator] = {}
    raw_inputs = g.get("inputs") or {}
    if not isinstance(raw_inputs, dict):
        r.problem("source.generate.inputs", "expected a mapping of input name → generator")
        raw_inputs = {}
    for name, spec in raw_inputs.items():
        inputs[str(name)] = _generator(r, f"source.generate.inputs.{name}", spec)
    return Source(kind="generate", inputs=inputs, batch=batch, pool=pool, seed=seed)


def _generator(r: _Reader, path: str, raw: Any) -> InputGenerator:
    m = r.mapping(raw, path, (*GENERATOR_KINDS, "shape"))
    kinds = [k for k in GENERATOR_KINDS if k in m]
    if len(kinds) > 1:
        r.problem(path, f"choose one generator (found {', '.join(kinds)})")
    shape = None
    if "shape" in m:
        s = m["shape"]
        if not isinstance(s, list) or not all(isinstance(d, int) and d > 0 for d in s):
            r.problem(f"{path}.shape", f"expected a list of positive integers, got {s!r}")
        else:
            shape = tuple(s)
    if not kinds:
        return InputGenerator(kind="default", shape=shape)
    kind = kinds[0]
    args = m[kind]
    where = f"{path}.{kind}"
    if kind in ("uniform", "int"):
        if not (isinstance(args, list) and len(args) == 2 and all(_is_number(a) for a in args)):
            r.problem(where, f"expected [low, high], got {args!r}")
        elif args[0] > args[1]:
            r.problem(where, f"low {args[0]} is above high {args[1]}")
    elif kind == "normal":
        n = r.mapping(args, where, ("mean", "std"))
        if not all(_is_number(n.get(k)) for k in ("mean", "std")) or n.get("std", 0) < 0:
            r.problem(where, "expected {mean: number, std: non-negative number}")
        args = (n.get("mean"), n.get("std"))
    elif kind == "choice":
        if not isinstance(args, list) or not args:
            r.problem(where, "expected a non-empty list of values")
    elif kind == "bool":
        if not _is_number(args) or not 0 <= args <= 1:
            r.problem(where, f"expected the probability of true (0-1), got {args!r}")
    elif kind == "text":
        t = r.mapping(args, where, ("length", "alphabet"))
        length = t.get("length", [8, 8])
        if isinstance(length, int):
            length = [length, length]
        if not (isinstance(length, list) and len(length) == 2 and all(isinstance(x, int) for x in length)):
            r.problem(f"{where}.length", f"expected an integer or [min, max], got {length!r}")
            length = [8, 8]
        args = (tuple(length), str(t.get("alphabet", "abcdefghijklmnopqrstuvwxyz0123456789")))
    return InputGenerator(kind=kind, args=args, shape=shape)


def _load(r: _Reader, raw: Any) -> Load:
    m = r.mapping(
        raw, "load", ("stages", "arrivals", "warmup", "processes", "max_in_flight", "max_lag", "seed")
    )
    arrivals = str(m.get("arrivals", "poisson"))
    if arrivals not in ARRIVALS:
        r.problem("load.arrivals", f"expected one of {', '.join(ARRIVALS)}, got {arrivals!r}")
    stages: list[Stage] = []
    raw_stages = m.get("stages")
    if not isinstance(raw_stages, list) or not raw_stages:
        r.problem("load.stages", "required: a list of stages, e.g. [{rate: 100, duration: 30s}]")
        raw_stages = []
    previous: float | None = None
    for i, raw_stage in enumerate(raw_stages):
        path = f"load.stages[{i}]"
        s = r.mapping(raw_stage, path, ("rate", "from", "to", "duration"))
        duration = r.convert(f"{path}.duration", s.get("duration"), units.seconds)
        if duration is None:
            r.problem(f"{path}.duration", "required, e.g. 30s")
        elif duration <= 0:
            r.problem(f"{path}.duration", "must be positive")
        if "rate" in s and ("from" in s or "to" in s):
            r.problem(path, "a stage is either constant (rate) or a ramp (from/to), not both")
        if "rate" in s:
            start = end = r.convert(f"{path}.rate", s["rate"], units.rate, 0.0)
        elif "to" in s:
            end = r.convert(f"{path}.to", s["to"], units.rate, 0.0)
            begin = r.convert(f"{path}.from", s.get("from"), units.rate, previous)
            if begin is None:
                r.problem(f"{path}.from", "required for a first stage that ramps")
            start = 0.0 if begin is None else begin
        else:
            r.problem(path, "give rate (constant) or to (ramp, optionally from)")
            start = end = 0.0
        if max(start, end) <= 0:
            r.problem(path, "the rate must be above 0 somewhere in the stage")
        stages.append(Stage(start, end, duration or 0.0))
        previous = end
    processes = r.convert("load.processes", m.get("processes"), _positive_int, 1)
    return Load(
        stages=tuple(stages),
        arrivals=arrivals,
        warmup_s=r.convert("load.warmup", m.get("warmup"), units.seconds, 0.0),
        processes=processes,
        max_in_flight=r.convert("load.max_in_flight", m.get("max_in_flight"), _positive_int, 10_000),
        max_lag_s=r.convert(
            "load.max_lag", m.get("max_lag"), lambda v: units.seconds(v, unit_required=True), 0.01
        ),
        seed=r.convert("load.seed", m.get("seed"), int, 1),
    )


def _assertions(r: _Reader, raw: Any, target: Target | None) -> Assertions:
    m = r.mapping(raw, "assertions", ("latency", "latency_of", "errors", "min_rate", "server"))
    latency: dict[float, float] = {}
    for key, bound in r.mapping(
        m.get("latency"), "assertions.latency", _latency_keys(m.get("latency"))
    ).items():
        q = r.convert(f"assertions.latency.{key}", str(key), units.percentile_key)
        us = r.convert(
            f"assertions.latency.{key}", bound, lambda v: units.seconds(v, unit_required=True) * 1e6
        )
        if q is not None and us is not None:
            latency[q] = us
    latency_of = str(m.get("latency_of", "ok"))
    if latency_of not in ("ok", "all"):
        r.problem(
            "assertions.latency_of", f"expected 'ok' (successful requests) or 'all', got {latency_of!r}"
        )
    errors = r.mapping(m.get("errors"), "assertions.errors", ("max_rate", "by_code"))
    max_error_rate = r.convert("assertions.errors.max_rate", errors.get("max_rate"), units.fraction)
    by_code: dict[str, float] = {}
    for code, bound in r.mapping(errors.get("by_code"), "assertions.errors.by_code", STATUS_CODES).items():
        value = r.convert(f"assertions.errors.by_code.{code}", bound, units.fraction)
        if value is not None and code in STATUS_CODES:
            by_code[code] = value
    server: list[MetricAssertion] = []
    raw_server = m.get("server") or []
    if not isinstance(raw_server, list):
        r.problem("assertions.server", "expected a list of {metric, labels, max_increase | …}")
        raw_server = []
    for i, item in enumerate(raw_server):
        server.append(_metric_assertion(r, f"assertions.server[{i}]", item))
    if server and target is not None and not target.metrics:
        r.problem("target.metrics", "required by assertions.server: the server's Prometheus /metrics URL")
    return Assertions(
        latency_us=latency,
        latency_of=latency_of,
        max_error_rate=max_error_rate,
        max_error_rate_by_code=by_code,
        min_rate=r.convert("assertions.min_rate", m.get("min_rate"), units.rate),
        server=tuple(server),
    )


def _latency_keys(raw: Any) -> tuple[str, ...]:
    # any pNN key is allowed; malformed ones are reported by units.percentile_key
    return tuple(str(k) for k in raw) if isinstance(raw, dict) else ()


def _metric_assertion(r: _Reader, path: str, raw: Any) -> MetricAssertion:
    m = r.mapping(raw, path, ("metric", "labels", "quantile", "over", *METRIC_BOUNDS))
    metric = m.get("metric")
    if not isinstance(metric, str) or not metric:
        r.problem(f"{path}.metric", "required: a metric (sample) name, e.g. engine_requests_total")
        metric = ""
    labels = _labels(r, f"{path}.labels", m.get("labels"))
    bounds = {}
    for key in METRIC_BOUNDS:
        if key in m:
            value = m[key]
            if key.endswith("ratio"):
                value = r.convert(f"{path}.{key}", value, units.fraction)
            elif not _is_number(value):
                r.problem(f"{path}.{key}", f"expected a number, got {value!r}")
                continue
            if value is not None:
                bounds[key] = float(value)
    if not bounds:
        r.problem(path, f"give at least one bound: {', '.join(METRIC_BOUNDS)}")
    quantile = m.get("quantile")
    if quantile is not None and (not _is_number(quantile) or not 0 < quantile < 1):
        r.problem(f"{path}.quantile", f"expected a number between 0 and 1 (e.g. 0.99), got {quantile!r}")
        quantile = None
    if quantile is not None and set(bounds) - {"max", "min"}:
        r.problem(path, "with quantile, bound the value with max or min (seconds, as the histogram)")
    over = r.mapping(m.get("over"), f"{path}.over", ("metric", "labels"))
    ratio = {"max_ratio", "min_ratio"} & set(bounds)
    if ratio and not over:
        r.problem(f"{path}.over", "required by max_ratio/min_ratio: the denominator {metric?, labels}")
    if over and not ratio:
        r.problem(f"{path}.over", "only used with max_ratio or min_ratio")
    return MetricAssertion(
        metric=metric,
        labels=labels,
        bounds=bounds,
        quantile=float(quantile) if quantile is not None else None,
        over_metric=str(over.get("metric", metric)) if over else None,
        over_labels=_labels(r, f"{path}.over.labels", over.get("labels")) if over else {},
    )


def _labels(r: _Reader, path: str, raw: Any) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        r.problem(path, "expected a mapping of label → value")
        return {}
    return {str(k): str(v).lower() if isinstance(v, bool) else str(v) for k, v in raw.items()}


def _capacity(r: _Reader, raw: Any) -> Capacity:
    m = r.mapping(raw, "capacity", ("start", "max", "step", "warmup", "precision", "max_steps", "min_rate"))
    c = Capacity(
        start=r.convert("capacity.start", m.get("start"), units.rate, 50.0),
        max=r.convert("capacity.max", m.get("max"), units.rate, 100_000.0),
        step_s=r.convert("capacity.step", m.get("step"), units.seconds, 10.0),
        warmup_s=r.convert("capacity.warmup", m.get("warmup"), units.seconds, 2.0),
        precision=r.convert("capacity.precision", m.get("precision"), units.fraction, 0.05),
        max_steps=r.convert("capacity.max_steps", m.get("max_steps"), _positive_int, 12),
        min_rate_fraction=r.convert("capacity.min_rate", m.get("min_rate"), units.fraction, 0.95),
    )
    if c.start <= 0 or c.start > c.max:
        r.problem("capacity", f"need 0 < start ({c.start:g}) <= max ({c.max:g})")
    if c.step_s <= 0:
        r.problem("capacity.step", "must be positive")
    if c.precision <= 0:
        r.problem("capacity.precision", "must be positive, e.g. 5%")
    return c


def _positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"expected a positive integer, got {value!r}")
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
