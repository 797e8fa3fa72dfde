"""onnxruntime at the edge: session creation, signatures, warm-up timing, error translation.

Everything that touches onnxruntime's own types lives here, so ``engine.runtimes.onnx``
only deals with our kernel types. onnxruntime exceptions are translated where they
enter: at load into a one-line ``ValueError`` (the graph validator turns it into a
diagnostic), at run into the engine's error tree.
"""

from __future__ import annotations

import re
import statistics
import time
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

from engine.errors import EngineError, InternalError, InvalidRequest
from engine.interfaces import ModelSignature
from engine.tensors import DataType, TensorSpec

_ORT_PREFIX = re.compile(r"^\[ONNXRuntimeError\]\s*:\s*\d+\s*:\s*[A-Z_]+\s*:\s*")
_PATHS = re.compile(r"(?:[A-Za-z]:)?(?:[\\/][\w.\-]+){2,}")
_SOURCE_LOCATIONS = re.compile(r"\b[\w\-]+\.(?:h|cc|cpp):\d+\s*(?:\w+\s+)?")
_NODE_NAME = re.compile(r"Name:'[^']*'\s*")
_SHAPE_WORDS = ("shape", "dimension", "broadcast", "rank", "size")
PROBE_ROWS = 64  # second warm-up batch size, to estimate the per-row cost
_ORT_LOG_ERROR = 3  # onnxruntime log severity: 0 verbose .. 4 fatal; keep load warnings quiet
_ORT_LOG_FATAL = 4  # run errors are raised to us and mapped; onnxruntime need not print them too


def clean_message(exc: BaseException) -> str:
    """One line of onnxruntime's text: no error-code prefix, no file paths, no hints."""
    text = _ORT_PREFIX.sub("", str(exc))
    text = text.replace("Please fix either the inputs/outputs or the model.", "")
    text = _NODE_NAME.sub("", _SOURCE_LOCATIONS.sub("", text))
    text = _PATHS.sub("<path>", text)
    return " ".join(text.split()).rstrip(" .") or type(exc).__name__


def create_session(model_bytes: bytes, intra_op_threads: int) -> ort.InferenceSession:
    """A CPU session: given intra-op threads, one inter-op thread, sequential, all graph optimisations."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = _ORT_LOG_ERROR
    return ort.InferenceSession(model_bytes, sess_options=options, providers=["CPUExecutionProvider"])


def quiet_run_options() -> ort.RunOptions:
    """Run options that keep onnxruntime from logging the errors it raises to us."""
    options = ort.RunOptions()
    options.log_severity_level = _ORT_LOG_FATAL
    return options


def _spec(arg: ort.NodeArg, role: str) -> TensorSpec:
    try:
        datatype = DataType.from_onnx(arg.type)
    except ValueError:
        raise ValueError(f"{role} '{arg.name}' has type {arg.type}, which has no V2 datatype") from None
    shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in (arg.shape or ()))
    return TensorSpec(arg.name, datatype, shape)


def read_signature(session: ort.InferenceSession) -> ModelSignature:
    """Inputs and outputs in the model's order; symbolic or unknown dimensions become -1."""
    return ModelSignature(
        inputs=tuple(_spec(arg, "input") for arg in session.get_inputs()),
        outputs=tuple(_spec(arg, "output") for arg in session.get_outputs()),
    )


def synthesise_inputs(signature: ModelSignature, rows: int = 1) -> list[np.ndarray]:
    """Zero-filled arrays matching the signature, every -1 dimension set to ``rows``."""
    arrays = []
    for spec in signature.inputs:
        shape = tuple(rows if d == -1 else d for d in spec.shape)
        if spec.datatype is DataType.BYTES:
            arrays.append(np.full(shape, "", dtype=object))
        else:
            arrays.append(np.zeros(shape, dtype=spec.datatype.numpy_dtype))
    return arrays


@dataclass(frozen=True, slots=True)
class Warmup:
    """Median ``session.run`` times measured at load on zero-filled inputs."""

    run_ns: int | None  # batch of 1 row; None when the model could not run synthetic input
    probe_run_ns: int | None  # batch of ``PROBE_ROWS`` rows
    error: str | None = None

    def rows_within(self, budget_ns: int, cap: int) -> int:
        """Largest batch estimated (linearly) to run within ``budget_ns``; 0 if not even one row."""
        if self.run_ns is None or self.run_ns >= budget_ns:
            return 0
        if self.probe_run_ns is None:
            return 1
        per_row = max(self.probe_run_ns - self.run_ns, 0) / (PROBE_ROWS - 1)
        if per_row == 0:
            return cap
        return min(cap, 1 + int((budget_ns - self.run_ns) / per_row))


def _median_run_ns(
    session: ort.InferenceSession,
    output_names: list[str],
    feed: dict[str, np.ndarray],
    runs: int,
    budget_ns: int,
) -> int:
    quiet = quiet_run_options()
    session.run(output_names, feed, quiet)  # first run allocates; not timed
    samples: list[int] = []
    spent = 0
    while len(samples) < runs and (len(samples) < 3 or spent < budget_ns):
        start = time.perf_counter_ns()
        session.run(output_names, feed, quiet)
        took = time.perf_counter_ns() - start
        samples.append(took)
        spent += took
    return int(statistics.median(samples))


def measure(session: ort.InferenceSession, signature: ModelSignature, *, runs: int, budget_ns: int) -> Warmup:
    """Time ``runs`` batch-1 runs and a few ``PROBE_ROWS``-row runs of synthetic input.

    Each timing stops early, after at least three runs, once ``budget_ns`` is spent, so
    a slow model does not stretch its load by ``runs`` times its run time.
    """
    names = [t.name for t in signature.inputs]
    outputs = [t.name for t in signature.outputs]
    try:
        feed = dict(zip(names, synthesise_inputs(signature, 1), strict=True))
        run_ns = _median_run_ns(session, outputs, feed, runs, budget_ns)
    except Exception as exc:  # a model that cannot run zeros may still serve real data
        return Warmup(None, None, clean_message(exc))
    try:
        feed = dict(zip(names, synthesise_inputs(signature, PROBE_ROWS), strict=True))
        probe_ns: int | None = _median_run_ns(session, outputs, feed, max(3, runs // 5), budget_ns)
    except Exception:
        probe_ns = None
    return Warmup(run_ns, probe_ns)


def translate_run_error(exc: Exception, model: str) -> EngineError:
    """Map an onnxruntime failure during ``run`` into the engine's error tree.

    Request data at fault (wrong dtype, rank or fixed dimension; shapes that do not
    broadcast) -> ``InvalidRequest``; anything else -> ``InternalError``.
    """
    message = f"model '{model}': {clean_message(exc)}"
    if isinstance(exc, ort_state.InvalidArgument):
        return InvalidRequest(message)
    if isinstance(exc, ort_state.Fail | ort_state.RuntimeException):
        lowered = message.lower()
        if any(word in lowered for word in _SHAPE_WORDS):
            return InvalidRequest(message)
    return InternalError(message)
