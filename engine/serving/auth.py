"""Bearer-token authentication for every front door (gRPC metadata, HTTP headers).

Clients send ``authorization: Bearer <token>`` in call metadata. Two tokens may be
configured, each from an environment variable or a file (never from graph files or
the command line, and never logged):

* the **inference** token opens inference and metadata RPCs;
* the **admin** token opens those and the admin RPCs (``engine.v1.Engine``, and
  Triton's repository load/unload). With only an inference token configured, it
  opens the admin RPCs too: they are never open while any token is set.

Liveness and readiness (``ServerLive``, ``ServerReady``, and ``grpc.health.v1`` which
is a separate service) answer without credentials so Kubernetes probes work. No
token configured means the level is open. A missing or unknown token is
UNAUTHENTICATED; an inference token on an admin RPC is PERMISSION_DENIED.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from dataclasses import dataclass

from engine.errors import PermissionDenied, Unauthenticated

OPEN, INFERENCE, ADMIN = "open", "inference", "admin"


@dataclass(slots=True)
class TokenGuard:
    inference_tokens: tuple[bytes, ...] = ()
    admin_tokens: tuple[bytes, ...] = ()

    def rotate(self, inference_tokens: tuple[bytes, ...], admin_tokens: tuple[bytes, ...]) -> bool:
        """Take new token sets (a token file changed); the next call is checked against them.

        A set that would become empty is kept as it was (a file caught mid-write, or emptied by
        mistake, must not turn authentication off or lock everyone out); turning authentication on
        or off takes a restart. Whether anything changed."""
        inference = inference_tokens or self.inference_tokens
        admin = admin_tokens or self.admin_tokens
        changed = (inference, admin) != (self.inference_tokens, self.admin_tokens)
        self.inference_tokens, self.admin_tokens = inference, admin
        return changed

    @property
    def enabled(self) -> bool:
        return bool(self.inference_tokens or self.admin_tokens)

    def check(self, metadata: Sequence[tuple[str, str | bytes]] | None, level: str) -> None:
        """Raise unless the call's metadata carries a token good enough for ``level``.

        Inference level: open when no inference token is configured; else the inference or
        the admin token. Admin level: the admin token; when only an inference token is
        configured, that one (admin RPCs are never open while any token is set).
        """
        if level == OPEN or not self.enabled:
            return
        if level == INFERENCE:
            if not self.inference_tokens:
                return
            accepted = self.inference_tokens + self.admin_tokens
        else:
            accepted = self.admin_tokens or self.inference_tokens
        token = _bearer(metadata)
        if token is None:
            raise Unauthenticated("missing credentials: send 'authorization: Bearer <token>' metadata")
        if _matches(token, accepted):
            return
        if level == ADMIN and _matches(token, self.inference_tokens):
            raise PermissionDenied("this token may not call admin RPCs")
        raise Unauthenticated("invalid credentials")


def _bearer(metadata: Sequence[tuple[str, str | bytes]] | None) -> bytes | None:
    for key, value in metadata or ():
        if key.lower() == "authorization":
            text = value.decode(errors="replace") if isinstance(value, bytes) else value
            scheme, _, token = text.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip().encode()
    return None


def _matches(token: bytes, tokens: tuple[bytes, ...]) -> bool:
    # compare_digest against every configured token: timing does not reveal which matched
    found = False
    for candidate in tokens:
        found |= hmac.compare_digest(token, candidate)
    return found
