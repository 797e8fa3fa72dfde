"""The build's one decision that pyproject.toml cannot state: which modules mypyc compiles to C.

Every call runs the same few thousand lines: the gRPC door's translation, the inference core, the
codecs, the plan runner, the statistics and the expression evaluator. Compiled with mypyc (the
type checker's compiler, fed by the same annotations ``make lint`` checks), the engine's own work
per call, above onnxruntime's run and the transport, takes about 40 % fewer instructions than
interpreted (docs/benchmarks.md, "The hot path compiled").
Everything else (loading, validation, the CLIs, adapters, observability sinks) stays interpreted:
it runs once per reload or off the hot path.

- ``make serve``, ``make test`` and ``make bench`` build these in place (``make compiled``), so the
  suite tests what the image runs; ``ENGINE_COMPILE=0 make test`` runs the same suite interpreted.
- ``ENGINE_COMPILE=1 pip install --no-build-isolation .`` builds a wheel with them compiled (the
  image does this; mypy, the type stubs and a C compiler must be installed: ``.[compile]`` and gcc);
  without ``ENGINE_COMPILE=1`` the package installs as plain Python.

The source files stay beside their extension modules, and Python imports the extension: a source
edited after the build is not what runs until ``make compiled`` (``engine.compiled`` warns of it at
start-up, and the test suite refuses to run).
"""

from __future__ import annotations

import os

from setuptools import setup

COMPILED = [
    # the gRPC door's per-call translation
    "engine/protocol/calls.py",
    "engine/protocol/codec.py",
    "engine/protocol/codec_decode.py",
    "engine/protocol/codec_encode.py",
    "engine/protocol/codec_request.py",
    "engine/protocol/codec_tables.py",
    "engine/protocol/status.py",
    # the inference core
    "engine/serving/admission.py",
    "engine/serving/call.py",
    "engine/serving/core.py",
    "engine/serving/failure.py",
    "engine/serving/parameters.py",
    "engine/serving/shapes.py",
    "engine/serving/state.py",
    "engine/serving/tracing.py",
    # the plan, its nodes and their statistics
    "engine/execution/runner.py",
    "engine/execution/stats.py",
    "engine/graph/ops/call.py",
    "engine/graph/ops/expression_eval.py",
    "engine/graph/ops/transforms.py",
    "engine/runtimes/onnx.py",
]
"""Paths relative to this file, compiled together as one group (calls between them are native)."""


def _extensions() -> list[object]:
    if os.environ.get("ENGINE_COMPILE") != "1":
        return []
    from mypyc.build import mypycify

    return list(mypycify(COMPILED, opt_level="3", group_name="engine.native"))


if __name__ == "__main__":
    setup(ext_modules=_extensions())
