"""Regenerate the Python stubs for the ``.proto`` files beside this script.

    .venv/bin/python proto/generate.py           # write engine/protocol/generated/
    .venv/bin/python proto/generate.py --check   # exit 1 if the committed stubs are stale

The stubs land in the package ``engine.protocol.generated`` (``inference/…``,
``engine/v1/…``). protoc writes imports such as ``from inference import
model_config_pb2``, which only work with ``proto/`` on ``sys.path``; we rewrite
them to ``from engine.protocol.generated.inference import model_config_pb2``.

The stubs register their descriptors in a private descriptor pool
(``engine.protocol.generated.pool.POOL``) instead of protobuf's default pool:
``tritonclient`` ships its own generated copy of the ``inference`` package and
registers the same symbol names (``inference.ModelInferRequest``, …) in the
default pool, so a process importing both (every integration test, any tool
using tritonclient beside our stubs) would fail with "duplicate symbol". The
wire format does not depend on the pool. Reflection must be given ``POOL``.

Output is deterministic for one ``grpcio-tools`` version: the same sources give
byte-identical files, which ``tests/unit/test_proto_stubs.py`` checks through
``render``.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
from pathlib import Path

PROTO_DIR = Path(__file__).resolve().parent
REPO_ROOT = PROTO_DIR.parent
OUT_DIR = REPO_ROOT / "engine" / "protocol" / "generated"
OUT_PACKAGE = "engine.protocol.generated"

# Sources relative to PROTO_DIR, dependencies first.
SOURCES = (
    "inference/model_config.proto",
    "inference/grpc_service.proto",
    "engine/v1/engine.proto",
)
# Proto packages that become subpackages of OUT_PACKAGE.
PACKAGES = ("inference", "engine.v1")

_POOL_MODULE = '''"""The descriptor pool every generated stub in this package registers in.

Written by proto/generate.py; do not edit. A private pool keeps our
``inference.*`` symbols apart from tritonclient's copy of the same protocol,
which lives in protobuf's default pool. Pass ``POOL`` to gRPC server
reflection.
"""

from google.protobuf import descriptor_pool

POOL = descriptor_pool.DescriptorPool()
'''

_ROOT_INIT = '''"""Generated protobuf and gRPC stubs (written by proto/generate.py; do not edit).

Import the modules directly, e.g.
``from engine.protocol.generated.inference import grpc_service_pb2``.
"""

from engine.protocol.generated.pool import POOL

__all__ = ["POOL"]
'''

_PACKAGE_INIT = '"""Generated stubs (written by proto/generate.py; do not edit)."""\n'

_IMPORT_RE = re.compile(r"^from (" + "|".join(re.escape(p) for p in PACKAGES) + r") import ", re.MULTILINE)
_POOL_CALL = "_descriptor_pool.Default().AddSerializedFile("
_BUILDER_IMPORT = "from google.protobuf.internal import builder as _builder\n"
_BUILD_TOP_RE = re.compile(r"(_builder\.BuildTopDescriptorsAndMessages\(DESCRIPTOR, ')([\w.]+)(')")


class GenerationError(RuntimeError):
    """protoc failed, or its output no longer has the shape we rewrite."""


def _run_protoc(work_dir: Path) -> None:
    from grpc_tools import protoc  # dev dependency; imported only when generating

    well_known = Path(protoc.__file__).resolve().parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_DIR}",
        f"-I{well_known}",
        f"--python_out={work_dir}",
        f"--pyi_out={work_dir}",
        f"--grpc_python_out={work_dir}",
        *SOURCES,
    ]
    code = protoc.main(args)
    if code != 0:
        raise GenerationError(f"protoc exited with status {code}")


def _rewrite(rel_path: str, text: str) -> str:
    text = _IMPORT_RE.sub(lambda m: f"from {OUT_PACKAGE}.{m.group(1)} import ", text)
    if rel_path.endswith("_pb2.py"):
        if text.count(_POOL_CALL) != 1 or text.count(_BUILDER_IMPORT) != 1:
            raise GenerationError(f"{rel_path}: unexpected protoc output; update proto/generate.py")
        text = text.replace(_POOL_CALL, "_generated_pool.POOL.AddSerializedFile(")
        text = text.replace(
            _BUILDER_IMPORT,
            _BUILDER_IMPORT + f"from {OUT_PACKAGE} import pool as _generated_pool\n",
        )
        text, count = _BUILD_TOP_RE.subn(
            lambda m: f"{m.group(1)}{OUT_PACKAGE}.{m.group(2)}{m.group(3)}", text
        )
        if count != 1:
            raise GenerationError(f"{rel_path}: unexpected protoc output; update proto/generate.py")
    return text


def _has_service(source: str) -> bool:
    return (
        re.search(r"^service\s", (PROTO_DIR / source).read_text(encoding="utf-8"), re.MULTILINE) is not None
    )


def render() -> dict[str, str]:
    """Every file of the generated package: relative path -> text."""
    files: dict[str, str] = {"__init__.py": _ROOT_INIT, "pool.py": _POOL_MODULE}
    for package in PACKAGES:
        parts = package.split(".")
        for depth in range(1, len(parts) + 1):
            files["/".join(parts[:depth]) + "/__init__.py"] = _PACKAGE_INIT
    with tempfile.TemporaryDirectory(prefix="engine-proto-") as tmp:
        work_dir = Path(tmp)
        _run_protoc(work_dir)
        for source in SOURCES:
            stem = source.removesuffix(".proto")
            wanted = [f"{stem}_pb2.py", f"{stem}_pb2.pyi"]
            if _has_service(source):
                wanted.append(f"{stem}_pb2_grpc.py")
            for rel in wanted:
                path = work_dir / rel
                if not path.is_file():
                    raise GenerationError(f"protoc did not write {rel}")
                files[rel] = _rewrite(rel, path.read_text(encoding="utf-8"))
    return dict(sorted(files.items()))


def _existing(out_dir: Path) -> dict[str, Path]:
    if not out_dir.is_dir():
        return {}
    return {
        p.relative_to(out_dir).as_posix(): p
        for p in out_dir.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }


def generate(out_dir: Path = OUT_DIR) -> list[Path]:
    """Write the generated package into ``out_dir``, removing files that are no longer generated."""
    files = render()
    for rel, path in _existing(out_dir).items():
        if rel not in files:
            path.unlink()
    written = []
    for rel, text in files.items():
        path = out_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode("utf-8"))
        written.append(path)
    for cache in out_dir.rglob("__pycache__"):
        shutil.rmtree(cache, ignore_errors=True)
    return written


def stale_files(out_dir: Path = OUT_DIR) -> list[str]:
    """Relative paths that differ between ``out_dir`` and a fresh generation (missing, extra or changed)."""
    files = render()
    existing = _existing(out_dir)
    stale = [rel for rel in files if rel not in existing or existing[rel].read_bytes() != files[rel].encode()]
    stale += [rel for rel in existing if rel not in files]
    return sorted(stale)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report stale stubs; exit 1 if any")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files()
        for rel in stale:
            print(f"stale: {OUT_DIR / rel}", file=sys.stderr)
        if stale:
            print("run `make proto`", file=sys.stderr)
        return 1 if stale else 0
    for path in generate():
        print(path.relative_to(REPO_ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
