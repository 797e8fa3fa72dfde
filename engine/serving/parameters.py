"""Request-level parameters: the one policy every front door applies.

A door turns its wire form (protobuf ``InferParameter``, a JSON object) into plain values —
``bool``, ``int``, ``float`` or ``str`` — and calls ``check_parameters``. Every parameter is
one this server implements, small, and of its type, or the call is refused with
INVALID_ARGUMENT naming it: a parameter is never silently ignored.

* ``timeout``: integer microseconds (Triton's schedule-policy parameter); 0 means none.
* ``binary_data_output``: bool (the binary tensor data extension; a gRPC door honours it too).
* ``lineage``: bool; true asks for the models behind the answer as response parameters
  (``lineage.<node>.sha256``, ``lineage.<node>.source``; docs/lineage.md).
* ``triton_enable_empty_final_response``: bool, sent by tritonclient and perf_analyzer for
  decoupled models; a graph answers every request with exactly one response, the final one.
* ``sequence_id``/``sequence_start``/``sequence_end`` and ``priority`` are refused unless they ask
  for the default (0, "", false), which means the same as their absence.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from engine.errors import InvalidRequest

MAX_PARAMETERS: Final = 64
MAX_PARAMETER_KEY_CHARS: Final = 256
MAX_PARAMETER_VALUE_BYTES: Final = 4096
SUPPORTED_PARAMETERS: Final = (
    "binary_data_output",
    "lineage",
    "timeout",
    "triton_enable_empty_final_response",
)
NOT_IMPLEMENTED: Final = {
    "sequence_id": "sequences (stateful models) are not implemented: every graph call is stateless",
    "sequence_start": "sequences (stateful models) are not implemented: every graph call is stateless",
    "sequence_end": "sequences (stateful models) are not implemented: every graph call is stateless",
    "priority": "request priorities are not implemented: every call is admitted in arrival order",
}
_BOOLS: Final = ("binary_data_output", "lineage", "triton_enable_empty_final_response")
_NAME_CHARS: Final = 64  # a refused name is quoted up to this long

ParameterValue = bool | int | float | str | None


def _clip(name: str) -> str:
    return name if len(name) <= _NAME_CHARS else name[: _NAME_CHARS - 1] + "…"


def _kind(value: ParameterValue) -> str:
    if value is None:
        return "unset"
    return {bool: "bool", int: "integer", float: "double", str: "string"}[type(value)]


def check_parameters(parameters: Mapping[str, ParameterValue]) -> float | None:
    """Refuse what this server does not implement; returns the ``timeout`` in seconds, or None."""
    if not parameters:
        return None
    if len(parameters) > MAX_PARAMETERS:
        raise InvalidRequest(f"request has {len(parameters)} parameters, above the limit of {MAX_PARAMETERS}")
    timeout: float | None = None
    refused: list[str] = []
    for key, value in parameters.items():
        name = _clip(key)
        if len(key) > MAX_PARAMETER_KEY_CHARS:
            raise InvalidRequest(
                f"parameter '{name}': name is {len(key)} characters, above {MAX_PARAMETER_KEY_CHARS}"
            )
        if isinstance(value, str) and len(value) > MAX_PARAMETER_VALUE_BYTES:
            raise InvalidRequest(
                f"parameter '{name}': value is {len(value)} characters, above {MAX_PARAMETER_VALUE_BYTES}"
            )
        if key in _BOOLS:
            if not isinstance(value, bool):
                raise InvalidRequest(f"parameter '{key}' must be a bool, not {_kind(value)}")
        elif key == "timeout":
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidRequest(
                    f"parameter 'timeout' must be an integer number of microseconds, not {_kind(value)}"
                )
            if value < 0:
                raise InvalidRequest(f"parameter 'timeout' must not be negative, got {value}")
            timeout = value / 1e6 if value else None  # 0: no timeout, as Triton reads it
        elif key in NOT_IMPLEMENTED:
            if value:  # 0, "", false and unset ask for the default
                refused.append(key)
        else:
            raise InvalidRequest(
                f"parameter '{name}' is not implemented by this server (request parameters it "
                f"reads: {', '.join(SUPPORTED_PARAMETERS)}); remove it"
            )
    if refused:
        refused.sort(key=list(NOT_IMPLEMENTED).index)
        named = ", ".join(f"'{key}'" for key in refused)
        plural = "s" if len(refused) > 1 else ""
        raise InvalidRequest(f"parameter{plural} {named}: {NOT_IMPLEMENTED[refused[0]]}")
    return timeout
