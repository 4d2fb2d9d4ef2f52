"""Who may call what: the workers' shared internal token, and users' bearer tokens."""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from fastapi import HTTPException, Request

INTERNAL_HEADER = "x-internal-token"


class Tokens:
    """The internal token and the access-token -> user-id table of one gallery."""

    def __init__(self, internal_token: str, access_tokens: Mapping[str, int]) -> None:
        if not internal_token:
            raise ValueError("the gallery needs a non-empty internal token")
        self.internal_token = internal_token
        self.access_tokens = dict(access_tokens)

    def is_internal(self, presented: str | None) -> bool:
        # Constant-time comparison: the internal token is a shared secret.
        return presented is not None and hmac.compare_digest(presented.encode(), self.internal_token.encode())

    def user_for(self, presented: str) -> int | None:
        for token, user_id in self.access_tokens.items():
            if hmac.compare_digest(presented.encode(), token.encode()):
                return user_id
        return None


def require_internal(request: Request) -> None:
    """FastAPI dependency: 401 unless `x-internal-token` matches."""
    tokens: Tokens = request.app.state.tokens
    if not tokens.is_internal(request.headers.get(INTERNAL_HEADER)):
        raise HTTPException(401, f"missing or wrong {INTERNAL_HEADER} header")


def current_user(request: Request) -> int:
    """FastAPI dependency: the user id behind `Authorization: Bearer <token>`, else 401."""
    tokens: Tokens = request.app.state.tokens
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    user_id = tokens.user_for(token.strip()) if scheme.lower() == "bearer" and token.strip() else None
    if user_id is None:
        raise HTTPException(401, "missing or invalid bearer token", headers={"WWW-Authenticate": "Bearer"})
    return user_id
