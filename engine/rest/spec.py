"""``Route``: one path of the REST door as the router and the OpenAPI document both read it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from engine.serving.auth import INFERENCE


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    handler: Callable[..., Awaitable[Any]]
    """An unbound ``RestDoor`` method taking the door and the request."""
    summary: str
    level: str = INFERENCE
    """The credentials it needs (``engine.serving.auth``)."""
    body: str = ""
    """The OpenAPI schema of its request body; "" = none."""
    answer: str = ""
    """The OpenAPI schema of its answer; "" = none."""
    tag: str = "inference"
    codes: tuple[int, ...] = ()
    """The error codes it can answer besides 401/403 (for its credentials) and 500."""
