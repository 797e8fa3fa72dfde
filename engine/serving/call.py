"""What a front door hands the inference core for one inference call, and what it gets back.

A front door wraps each request it received in an ``InferCall``: the graph and version it
names, its id, how long its caller still waits, and two translations the core invokes at
the right moments — ``decode`` (wire tensors -> numpy arrays in the graph's input order,
checked against the graph's declared inputs) and ``encode`` (the graph's outputs -> the
door's response). The core times both, so statistics and records see the whole call, and
never learns the wire format. The same object carries what tracing needs from the door:
its headers (for the caller's W3C ``traceparent``) and the span attributes the door's
semantic conventions ask for.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import numpy as np

from engine.errors import Status
from engine.tensors import TensorSpec

R_co = TypeVar("R_co", covariant=True)

Headers = Sequence[tuple[str, str | bytes]]
SpanAttributes = Mapping[str, str | int]


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs ~2 µs a call in setattr calls
class InferResult:
    """A served graph's answer to one call, in the graph's output order (read-only by convention).

    ``outputs[i]`` is the output ``output_specs[i]``, or None when an optional node that
    produces it failed (the output is then left out of the response)."""

    graph: str
    version: str
    request_id: str
    output_specs: tuple[TensorSpec, ...]
    outputs: tuple[np.ndarray | None, ...]
    index: Mapping[str, int]
    run_ns: int = 0
    """How long the plan ran (decoding and encoding excluded)."""
    lineage: Mapping[str, str] = field(default_factory=dict)
    """``lineage.<node>.sha256`` / ``lineage.<node>.source`` of every model of the version (live nodes;
    shadows never shape the answer): a door adds them to its response when the request asks."""

    def output(self, name: str) -> np.ndarray | None:
        """The array served as output ``name`` (None when it was left out)."""
        return self.outputs[self.index[name]]


class InferCall(Protocol[R_co]):
    """One inference call as a front door received it (see the module docstring)."""

    @property
    def graph(self) -> str: ...

    @property
    def version(self) -> str:
        """The version asked for; "" = the latest ready one."""
        ...

    @property
    def request_id(self) -> str: ...

    @property
    def protocol(self) -> str:
        """The front door's name in metrics and records: ``grpc``, ``grpc-stream``, ``http``."""
        ...

    def time_remaining(self) -> float | None:
        """Seconds the caller still waits for the answer; None = no deadline."""
        ...

    def headers(self) -> Headers:
        """The call's metadata or headers (read only when tracing is on)."""
        ...

    def span_attributes(self) -> SpanAttributes:
        """Attributes the request span gets from the door (``rpc.system``, ``rpc.method``, ...)."""
        ...

    def status_attributes(self, status: Status) -> SpanAttributes:
        """Attributes that put ``status`` in the door's terms on the request span."""
        ...

    def decode(self, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> list[np.ndarray]:
        """The request's tensors as arrays in ``inputs`` order; raises ``InvalidRequest``/``TensorError``.

        ``outputs`` are the graph's outputs, to check the outputs the request asks for."""
        ...

    def encode(self, result: InferResult) -> R_co:
        """The door's response carrying ``result``."""
        ...
