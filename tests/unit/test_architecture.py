"""The layering of docs/architecture.md, enforced: a lower layer never imports a higher one."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

KERNEL = {"engine.errors", "engine.tensors", "engine.interfaces"}
# The package itself (``from engine import __version__``), not everything below it.
EXACT = {"engine", "engine.__version__"}
# module prefix -> engine modules (prefixes) it may import
ALLOWED: dict[str, set[str]] = {
    "engine.errors": set(),
    "engine.tensors": set(),
    "engine.interfaces": {"engine.tensors"},
    "engine.graph": KERNEL | {"engine.graph", "engine.shadow"},
    "engine.execution": KERNEL | {"engine.graph", "engine.execution", "engine.shadow"},
    "engine.runtimes": KERNEL | {"engine.runtimes"},
    # Shadow comparisons sit just above the kernel: no graph language, executor, observability or gRPC.
    "engine.shadow": KERNEL | {"engine.shadow"},
    # Observability reads the executor's counters at scrape time; it never drives execution.
    "engine.observability": KERNEL | {"engine.observability", "engine.execution.stats", "engine.shadow"},
    "engine.repository": KERNEL | {"engine.graph", "engine.execution", "engine.shadow"},
    "engine.protocol": KERNEL
    | {"engine.protocol", "engine.repository", "engine.execution", "engine.graph", "engine.shadow"},
    "adapters": KERNEL | {"adapters"},
    "loadtest": {"engine.protocol.generated", "loadtest"},
}
# Only these may touch grpc or generated protobuf modules.
GRPC_ALLOWED = (
    "engine.protocol", "engine.server", "engine.cli", "engine.shadow_cli", "engine.supervisor", "loadtest"
)  # fmt: skip


def _modules() -> list[tuple[str, Path]]:
    found = []
    for package in ("engine", "adapters", "loadtest"):
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


@pytest.mark.parametrize(("module", "path"), _modules(), ids=lambda v: str(v) if isinstance(v, str) else "")
def test_layers_point_downwards(module: str, path: Path) -> None:
    rule = next((ALLOWED[p] for p in sorted(ALLOWED, key=len, reverse=True) if _within(module, (p,))), None)
    imports = _imports(path)
    if rule is not None:
        ours = {i for i in imports if i.split(".")[0] in ("engine", "adapters", "loadtest")}
        wrong = sorted(i for i in ours if i not in EXACT and not _within(i, rule | {module}))
        assert not wrong, f"{module} may not import {wrong}"
    if not _within(module, GRPC_ALLOWED):
        grpc_like = sorted(
            i
            for i in imports
            if i.split(".")[0] in ("grpc", "grpc_health", "grpc_reflection")
            or i.endswith("_pb2")
            or i.endswith("_pb2_grpc")
            or ".generated" in i
        )
        assert not grpc_like, f"{module} imports gRPC/protobuf modules {grpc_like}; keep them at the edge"


def test_the_walk_sees_every_layer() -> None:
    modules = {m for m, _ in _modules()}
    for expected in ("engine.errors", "engine.execution.runner", "engine.repository", "engine.server"):
        assert expected in modules
