"""Text-search requests: the embedding a text worker computed for each request id."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from services.gallery.db import Database, utc_now
from services.gallery.vectors import from_blob, to_blob


class TextQueryStore:
    """One row per request id; a repeated callback replaces the row."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def upsert(self, request_id: int, model: str, embedding: Sequence[float]) -> None:
        """Store (or replace) the embedding computed for one text-search request."""
        with self.db.write() as conn:
            conn.execute(
                "INSERT INTO text_queries (request_id, model, dim, embedding, updated_at)"
                " VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (request_id) DO UPDATE SET model = excluded.model, dim = excluded.dim,"
                " embedding = excluded.embedding, updated_at = excluded.updated_at",
                (request_id, model, len(embedding), to_blob(embedding), utc_now()),
            )

    def get(self, request_id: int) -> dict[str, Any] | None:
        """The stored result, or None when no worker has answered yet."""
        sql = "SELECT * FROM text_queries WHERE request_id = ?"
        r = self.db.connection().execute(sql, (request_id,)).fetchone()
        if r is None:
            return None
        return {
            "request_id": r["request_id"],
            "model": r["model"],
            "dim": r["dim"],
            "embedding": from_blob(r["embedding"]),
            "updated_at": r["updated_at"],
        }
