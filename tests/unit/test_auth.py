"""Bearer tokens: who may call what."""

from __future__ import annotations

import pytest

from engine.errors import PermissionDenied, Unauthenticated
from engine.serving.auth import ADMIN, INFERENCE, OPEN, TokenGuard

BOTH = TokenGuard(inference_tokens=(b"infer-secret",), admin_tokens=(b"admin-secret",))


def _md(token: str | None) -> list[tuple[str, str]]:
    return [] if token is None else [("authorization", f"Bearer {token}")]


def test_no_tokens_configured_means_open() -> None:
    TokenGuard().check(_md(None), ADMIN)
    TokenGuard().check(_md(None), INFERENCE)


def test_open_rpcs_need_nothing() -> None:
    BOTH.check(_md(None), OPEN)


@pytest.mark.parametrize(
    ("token", "level"), [("infer-secret", INFERENCE), ("admin-secret", INFERENCE), ("admin-secret", ADMIN)]
)
def test_accepted(token: str, level: str) -> None:
    BOTH.check(_md(token), level)


def test_missing_or_wrong_token_is_unauthenticated_and_never_echoed() -> None:
    with pytest.raises(Unauthenticated, match="missing credentials"):
        BOTH.check(_md(None), INFERENCE)
    with pytest.raises(Unauthenticated) as info:
        BOTH.check(_md("guess"), INFERENCE)
    assert "guess" not in str(info.value)


def test_an_inference_token_may_not_call_admin() -> None:
    with pytest.raises(PermissionDenied):
        BOTH.check(_md("infer-secret"), ADMIN)


def test_partial_configurations_never_leave_admin_open() -> None:
    only_inference = TokenGuard(inference_tokens=(b"i",))
    only_inference.check(_md("i"), ADMIN)
    with pytest.raises(Unauthenticated):
        only_inference.check(_md(None), ADMIN)
    only_admin = TokenGuard(admin_tokens=(b"a",))
    only_admin.check(_md(None), INFERENCE)  # inference stays open
    with pytest.raises(Unauthenticated):
        only_admin.check(_md(None), ADMIN)


def test_scheme_is_case_insensitive_and_other_metadata_is_ignored() -> None:
    BOTH.check([("x-other", "1"), ("Authorization", "bearer admin-secret")], ADMIN)
