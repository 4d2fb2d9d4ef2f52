"""Idempotency-Key on the internal callbacks: a repeated key gets the stored answer and changes nothing.

The workers send the same key on every retry and redelivery of one result (shared.idempotency), so a
result delivered twice (at-least-once delivery: a worker killed after the gallery stored its callback
but before it recorded that) is stored once. A key is remembered for KEY_TTL_S; it belongs to the path
it was first used on, and reusing it on another path is refused (422) rather than answered wrongly.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from fastapi import Header, Request
from fastapi.responses import JSONResponse

from services.gallery.db import Database
from services.gallery.deps import get_store

REPLAYED_HEADER = "Idempotent-Replayed"
"""Set to `true` on an answer that was replayed from a stored key (the request changed nothing)."""

KEY_TTL_S = 24 * 3600
"""A key is honoured for a day: far longer than any retry or redelivery, short enough to stay small."""

MAX_KEY_CHARS = 255


class IdempotencyStore:
    """Keys with the path they were used on and the answer that was sent."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def lookup(self, key: str) -> tuple[str, int, Any] | None:
        """(path, status, body) stored for `key` within the TTL, or None."""
        with self.db.read() as conn:
            row = conn.execute(
                "SELECT path, status, body FROM idempotency_keys WHERE key = ? AND created_at > ?",
                (key, time.time() - KEY_TTL_S),
            ).fetchone()
        return None if row is None else (row["path"], row["status"], json.loads(row["body"]))

    def remember(self, key: str, path: str, status: int, body: Any) -> None:
        """Store the answer for `key` (the first one wins) and drop expired keys."""
        now = time.time()
        with self.db.write() as conn:
            conn.execute("DELETE FROM idempotency_keys WHERE created_at <= ?", (now - KEY_TTL_S,))
            conn.execute(
                "INSERT OR IGNORE INTO idempotency_keys (key, path, status, body, created_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (key, path, status, json.dumps(body), now),
            )


def idempotency_key(
    key: str | None = Header(None, alias="Idempotency-Key", max_length=MAX_KEY_CHARS),
) -> str | None:
    """The request's Idempotency-Key header (optional)."""
    return key or None


def answer_once(
    request: Request, key: str | None, apply: Callable[[], dict[str, Any]]
) -> dict[str, Any] | JSONResponse:
    """Run `apply` unless `key` was seen: then answer what was answered the first time."""
    if key is None:
        return apply()
    keys = IdempotencyStore(get_store(request).db)
    path = request.url.path
    stored = keys.lookup(key)
    if stored is not None:
        stored_path, status, body = stored
        if stored_path != path:
            return JSONResponse(
                {"error": f"Idempotency-Key was first used on {stored_path}, not {path}"}, status_code=422
            )
        return JSONResponse(body, status_code=status, headers={REPLAYED_HEADER: "true"})
    body = apply()
    keys.remember(key, path, 200, body)
    return body
