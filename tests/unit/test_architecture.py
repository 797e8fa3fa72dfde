"""The layering of docs/architecture.md, enforced: a lower layer never imports a higher one.

    bootstrap   engine.server, engine.cli, engine.fleet, engine.config
    front doors engine.protocol                 (gRPC; protobuf types stay here)
                engine.rest                     (HTTP/REST; aiohttp types stay here)
    core        engine.serving                  (one inference path for every door and worker)
    repository  engine.repository
    execution   engine.execution
    graph       engine.graph.{values < ops < reading < checking < compiling < loader}, draw
    shadow      engine.shadow
    monitoring  engine.monitoring               (profiles, drift: numbers over a plan's values)
    kernel      engine.errors, engine.tensors, engine.interfaces

Implementations of the kernel's interfaces (runtimes, adapters, registry) see only the kernel;
observability reads the executor's counters and the shadow numbers, never drives them.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("engine", "adapters", "loadtest", "bench")

KERNEL = {"engine.errors", "engine.tensors", "engine.interfaces"}
# The package itself (``from engine import __version__``), not everything below it.
EXACT = {"engine", "engine.__version__"}
GRAPH_BASE = KERNEL | {"engine.shadow"}
# module prefix -> modules (prefixes) it may import; the longest matching prefix rules.
ALLOWED: dict[str, set[str]] = {
    "engine.errors": set(),
    "engine.tensors": set(),
    "engine.interfaces": {"engine.tensors"},
    "engine.shadow": KERNEL,
    # The graph language, in sub-layers; only the package's __init__ re-exports the loader.
    "engine.graph": {"engine.graph.loader", "engine.graph.draw", "engine.graph.values"},
    "engine.graph.values": GRAPH_BASE,
    "engine.graph.ops": GRAPH_BASE | {"engine.graph.values"},
    "engine.graph.reading": GRAPH_BASE | {"engine.graph.values", "engine.graph.ops"},
    "engine.graph.checking": GRAPH_BASE | {"engine.graph.values", "engine.graph.ops", "engine.graph.reading"},
    "engine.graph.compiling": GRAPH_BASE
    | {"engine.graph.values", "engine.graph.ops", "engine.graph.reading", "engine.graph.checking"},
    "engine.graph.loader": GRAPH_BASE
    | {
        "engine.graph.values",
        "engine.graph.ops",
        "engine.graph.reading",
        "engine.graph.checking",
        "engine.graph.compiling",
    },
    "engine.graph.draw": GRAPH_BASE | {"engine.graph.values"},
    # The graph file's JSON Schema, built from the readers' key tables and the op table.
    "engine.graph.schema": GRAPH_BASE | {"engine.graph.values", "engine.graph.ops", "engine.graph.reading"},
    "engine.execution": KERNEL | {"engine.graph.values", "engine.shadow"},
    # Monitoring (profiles, drift, live quality): plain numbers over a plan's values.
    "engine.monitoring": KERNEL | {"engine.graph.values"},
    "engine.repository": KERNEL | {"engine.graph", "engine.execution", "engine.shadow", "engine.monitoring"},
    "engine.serving": KERNEL
    | {"engine.repository", "engine.execution", "engine.graph", "engine.shadow", "engine.monitoring"},
    # A front door sees the core, the kernel and the plain values it renders; nothing that runs graphs.
    "engine.protocol": KERNEL
    | {"engine.serving", "engine.graph.values", "engine.execution.stats", "engine.shadow.report"},
    # The HTTP door: the same, plus the V2 metadata renderers it shares with the gRPC door (Triton's
    # HTTP config and statistics are the JSON form of the gRPC messages); never gRPC itself.
    "engine.rest": KERNEL
    | {"engine.serving", "engine.graph.values", "engine.execution.stats", "engine.protocol.metadata"},
    "engine.runtimes": KERNEL,
    # model sources (MLflow registry, pinned URLs) and their cache: fulfil engine.interfaces.ModelSource
    "engine.registry": KERNEL,
    "engine.observability": KERNEL | {"engine.execution.stats", "engine.shadow", "engine.monitoring"},
    "engine.config": set(),
    # which modules run compiled (setup.py) and whether their extensions are stale
    "engine.compiled": set(),
    "adapters": KERNEL,
    "loadtest": {"engine.protocol.generated"},
}
# The bootstrap may import anything; these are the modules no layer above may be imported by.
# Process entry points that build a server; bench.engine_threads, bench.core_cost and
# bench.server_cost (which shares core_cost's graphs and callgrind reading) are measurement probes.
BOOTSTRAP = (
    "engine.server",
    "engine.cli",
    "engine.fleet",
    "bench.engine_threads",
    "bench.core_cost",
    "bench.server_cost",
)
# Only these may touch grpc or generated protobuf modules.
GRPC_ALLOWED = ("engine.protocol", "engine.server", "engine.cli", "loadtest", "bench")
# Only the HTTP door serves HTTP with aiohttp (metrics use prometheus_client's own server).
AIOHTTP_ALLOWED = ("engine.rest", "bench")


def _modules() -> list[tuple[str, Path]]:
    found = []
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            rel = path.relative_to(ROOT).with_suffix("")
            if "generated" in rel.parts:
                continue
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            found.append((".".join(parts), path))
    return found


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _within(name: str, prefixes: set[str] | tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _ours(name: str) -> bool:
    return name.split(".")[0] in PACKAGES


@pytest.mark.parametrize(("module", "path"), _modules(), ids=lambda v: str(v) if isinstance(v, str) else "")
def test_layers_point_downwards(module: str, path: Path) -> None:
    rule = next((ALLOWED[p] for p in sorted(ALLOWED, key=len, reverse=True) if _within(module, (p,))), None)
    imports = _imports(path)
    own_package = next((p for p in sorted(ALLOWED, key=len, reverse=True) if _within(module, (p,))), module)
    if rule is not None:
        ours = {i for i in imports if _ours(i)}
        wrong = sorted(i for i in ours if i not in EXACT and not _within(i, rule | {own_package}))
        assert not wrong, f"{module} may not import {wrong}"
    if not _within(module, BOOTSTRAP):
        upward = sorted(i for i in imports if _within(i, BOOTSTRAP))
        assert not upward, f"{module} imports the bootstrap {upward}"
    if not _within(module, GRPC_ALLOWED):
        grpc_like = sorted(
            i
            for i in imports
            if i.split(".")[0] in ("grpc", "grpc_health", "grpc_reflection", "tritonclient")
            or i.endswith("_pb2")
            or i.endswith("_pb2_grpc")
            or ".generated" in i
        )
        assert not grpc_like, f"{module} imports gRPC/protobuf modules {grpc_like}; keep them at the edge"
    if not _within(module, AIOHTTP_ALLOWED):
        web = sorted(i for i in imports if i.split(".")[0] == "aiohttp")
        assert not web, f"{module} imports {web}; HTTP serving stays in engine.rest"


def _module_graph() -> dict[str, set[str]]:
    """Module -> the modules of ours it imports. ``from package import name`` is an edge to the
    submodule when ``name`` is one, else to the package (whose ``__init__`` runs either way, but
    only the latter reads what the ``__init__`` defines)."""
    modules = {m for m, _ in _modules()}

    def resolve(name: str) -> str:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name

    graph: dict[str, set[str]] = defaultdict(set)
    for module, path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [resolve(alias.name) for alias in node.names if _ours(alias.name)]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and _ours(node.module):
                targets = [resolve(f"{node.module}.{alias.name}") for alias in node.names]
            else:
                continue
            graph[module].update(t for t in targets if t and t != module)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_loops() -> None:
    """No module imports itself through others (a package's ``__init__`` counts as a module)."""
    loops = _cycles(_module_graph())
    assert not loops, f"import loops: {loops}"


def test_the_walk_sees_every_layer() -> None:
    modules = {m for m, _ in _modules()}
    for expected in (
        "engine.errors", "engine.execution.runner", "engine.repository", "engine.server",
        "engine.serving.core", "engine.protocol.inference", "engine.fleet.supervisor",
        "engine.graph.values.plan", "engine.cli.serve", "loadtest.cli", "bench.run",
    ):  # fmt: skip
        assert expected in modules
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
