"""onnxruntime at the edge: session creation, signatures, warm-up timing, error translation.

Everything that touches onnxruntime's own types lives here, so ``engine.runtimes.onnx``
only deals with our kernel types. onnxruntime exceptions are translated where they
enter: at load into a one-line reason (the graph validator turns it into a diagnostic),
at run into the engine's error tree. No onnxruntime text leaves this module: its messages
carry C++ signatures, source paths and addresses, so they go to the ``engine.errors``
log under an error id, and callers and diagnostics get our words, the id and at most the
names and numbers lifted out of the text.
"""

from __future__ import annotations

import logging
import re
import statistics
import time
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

from engine.errors import EngineError, InternalError, InvalidRequest, ResourceExhausted, new_error_id
from engine.interfaces import ModelSignature
from engine.tensors import DataType, TensorSpec

_SHAPE_WORDS = ("shape", "dimension", "broadcast", "rank", "size")
PROBE_ROWS = 64  # second warm-up batch size, to estimate the per-row cost
_ORT_LOG_ERROR = 3  # onnxruntime log severity: 0 verbose .. 4 fatal; keep load warnings quiet
_ORT_LOG_FATAL = 4  # run errors are raised to us and mapped; onnxruntime need not print them too

# Facts we lift out of onnxruntime's text (names and numbers only); the text itself never leaves.
_NAME = r"([A-Za-z_][\w.\-/:]{0,127})"
_BAD_DIMENSION = re.compile(
    rf"invalid dimensions for input: {_NAME} for the following indices"
    r"\s+index: (\d+) Got: (\d+) Expected: (\d+)"
)
_BAD_RANK = re.compile(rf"Invalid rank for input: {_NAME} Got: (\d+) Expected: (\d+)")
_BAD_TYPE = re.compile(r"Actual: \(tensor\((\w+)\)\) , expected: \(tensor\((\w+)\)\)")
_RUNNING_OP = re.compile(r"running (\w{1,64}) node")
_NO_OP = re.compile(r"No Op registered for (\w{1,64})")
_OPSET = re.compile(r"[Oo]pset (\d{1,4})")
_ALLOCATION = ("failed to allocate", "bad_alloc", "bad allocation", "out of memory", "allocation failed")
_OVERFLOW = ("integer overflow", "size() must be >= 0", "overflow")

log = logging.getLogger("engine.errors")


def _logged(exc: BaseException, what: str) -> str:
    """Log onnxruntime's own text under a fresh error id; the id is all a caller gets of it."""
    error_id = new_error_id()
    log.error("onnxruntime error (id %s) %s: %s: %s", error_id, what, type(exc).__name__, exc)
    return error_id


def load_problem(exc: BaseException, model: str) -> str:
    """Why onnxruntime could not load ``model``, in our words (its text goes to the log)."""
    text = str(exc)
    error_id = _logged(exc, f"loading model '{model}'")
    if isinstance(exc, ort_state.InvalidProtobuf) or "protobuf parsing failed" in text.lower():
        reason = "not an ONNX file (its bytes do not parse as an ONNX model)"
    elif match := _NO_OP.search(text):
        reason = f"it uses operator {match.group(1)}, which this onnxruntime does not implement"
    elif "opset" in text.lower() and (match := _OPSET.search(text)):
        reason = f"it is stamped with operator set {match.group(1)}, which this onnxruntime does not support"
    elif "type error" in text.lower() or "does not match expected type" in text:
        reason = "its declared tensor types contradict what its operators compute"
    elif any(word in text.lower() for word in _ALLOCATION):
        reason = "there was not enough memory to load it"
    else:
        reason = "onnxruntime rejected it as an invalid model"
    return f"{reason} (error id {error_id}; details in the server log)"


def warmup_problem(exc: BaseException, model: str) -> str:
    """Why the warm-up of ``model`` on zeros failed, in our words (its text goes to the log)."""
    error_id = _logged(exc, f"warming up model '{model}'")
    op = _RUNNING_OP.search(str(exc))
    where = f" in its {op.group(1)} operator" if op else ""
    return f"the model could not run all-zeros input{where} (error id {error_id})"


def create_session(model: bytes | str, intra_op_threads: int) -> ort.InferenceSession:
    """A CPU session: given intra-op threads, one inter-op thread, sequential, all graph optimisations.

    ``model`` is the file's bytes or its path (onnxruntime then reads it, once)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = _ORT_LOG_ERROR
    return ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])


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


@dataclass(frozen=True, slots=True)
class OutputShape:
    """What an output's declared shape promises about every run's result."""

    rank: int | None  # None: the model declares no shape
    fixed: tuple[tuple[int, int], ...]  # (axis, size) for every fixed dimension
    rows_of: int | None  # the input whose first dimension this output's first dimension is (same symbol)


def output_shapes(session: ort.InferenceSession) -> tuple[OutputShape, ...]:
    """The declared output shapes, with a batch dimension tied to an input's by its symbol."""
    batch_symbols: dict[str, int] = {}
    for index, arg in enumerate(session.get_inputs()):
        shape = arg.shape or ()
        if shape and isinstance(shape[0], str) and shape[0]:
            batch_symbols.setdefault(shape[0], index)
    shapes = []
    for arg in session.get_outputs():
        shape = arg.shape
        if shape is None:
            shapes.append(OutputShape(None, (), None))
            continue
        fixed = tuple((axis, d) for axis, d in enumerate(shape) if isinstance(d, int) and d >= 0)
        first = shape[0] if shape else None
        rows_of = batch_symbols.get(first) if isinstance(first, str) else None
        shapes.append(OutputShape(len(shape), fixed, rows_of))
    return tuple(shapes)


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


def measure(
    session: ort.InferenceSession, signature: ModelSignature, *, runs: int, budget_ns: int, model: str = ""
) -> Warmup:
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
        return Warmup(None, None, warmup_problem(exc, model))
    try:
        feed = dict(zip(names, synthesise_inputs(signature, PROBE_ROWS), strict=True))
        probe_ns: int | None = _median_run_ns(session, outputs, feed, max(3, runs // 5), budget_ns)
    except Exception:
        probe_ns = None
    return Warmup(run_ns, probe_ns)


def translate_run_error(exc: Exception, model: str) -> EngineError:
    """Map an onnxruntime failure during ``run`` into the engine's error tree, in our words.

    Memory the request's sizes ask for and cannot have -> ``ResourceExhausted``; request data at
    fault (wrong dtype, rank or fixed dimension; sizes that overflow; shapes that do not
    broadcast) -> ``InvalidRequest``; anything else -> ``InternalError``. Only names and numbers
    are lifted out of onnxruntime's text; the text itself (C++ signatures, source paths) is
    logged under the error id the message carries.
    """
    text = str(exc)
    lowered = text.lower()
    error_id = _logged(exc, f"running model '{model}'")
    op = _RUNNING_OP.search(text)
    where = f" in its {op.group(1)} operator" if op else ""
    tail = f" (error id {error_id})"
    if any(word in lowered for word in _ALLOCATION):
        return ResourceExhausted(
            f"model '{model}' could not allocate the memory this request needs{where}; "
            f"send smaller tensors or smaller sizes{tail}"
        )
    if match := _BAD_DIMENSION.search(text):
        name, index, got, expected = match.groups()
        return InvalidRequest(
            f"model '{model}': invalid dimensions for input '{name}': dimension {index} is {got}, "
            f"the model expects {expected}{tail}"
        )
    if match := _BAD_RANK.search(text):
        name, got, expected = match.groups()
        return InvalidRequest(
            f"model '{model}': input '{name}' has rank {got}, the model expects rank {expected}{tail}"
        )
    if match := _BAD_TYPE.search(text):
        got, expected = match.groups()
        return InvalidRequest(
            f"model '{model}': an input has data type {got}, the model expects {expected}{tail}"
        )
    if any(word in lowered for word in _OVERFLOW):
        return InvalidRequest(
            f"model '{model}': the request asks for a tensor size that is negative or too large to "
            f"represent{where}{tail}"
        )
    if isinstance(exc, ort_state.InvalidArgument) or (
        isinstance(exc, ort_state.Fail | ort_state.RuntimeException)
        and any(word in lowered for word in _SHAPE_WORDS)
    ):
        return InvalidRequest(
            f"model '{model}': the request's tensor shapes do not fit what the model computes "
            f"(dimension mismatch{where}){tail}"
        )
    return InternalError(f"model '{model}' failed{where}{tail}")
