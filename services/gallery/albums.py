"""Albums: named, ordered sets of one user's photos (what the people-album tool creates)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from services.gallery.db import Database, utc_now
from services.gallery.errors import PhotoNotFound

_CHUNK = 500
"""Ids per `IN (...)` query; SQLite caps the number of bound parameters."""


class AlbumStore:
    """Create and list albums; an album may only hold its owner's photos."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self, user_id: int, name: str, description: str, photo_ids: Sequence[int]) -> dict[str, Any]:
        """Create an album; PhotoNotFound names every id that is unknown or another user's."""
        ids = list(dict.fromkeys(photo_ids))  # keep order, drop repeats
        with self.db.write() as conn:
            owned = _owned(conn, user_id, ids)
            missing = [i for i in ids if i not in owned]
            if missing:
                raise PhotoNotFound(f"photos not found: {missing[:20]}{' ...' if len(missing) > 20 else ''}")
            created_at = utc_now()
            cur = conn.execute(
                "INSERT INTO albums (user_id, name, description, created_at) VALUES (?, ?, ?, ?)",
                (user_id, name, description, created_at),
            )
            album_id = int(cur.lastrowid or 0)
            conn.executemany(
                "INSERT INTO album_photos (album_id, photo_id, position) VALUES (?, ?, ?)",
                [(album_id, pid, pos) for pos, pid in enumerate(ids)],
            )
        return {
            "id": album_id,
            "name": name,
            "description": description,
            "photo_ids": ids,
            "created_at": created_at,
        }

    def add_photos(self, user_id: int, album_id: int, photo_ids: Sequence[int]) -> dict[str, Any]:
        """Append photos to the user's album (ids already in it are skipped); PhotoNotFound names an
        unknown album or photo ids that are unknown or another user's."""
        ids = list(dict.fromkeys(photo_ids))
        with self.db.write() as conn:
            if (
                conn.execute(
                    "SELECT 1 FROM albums WHERE id = ? AND user_id = ?", (album_id, user_id)
                ).fetchone()
                is None
            ):
                raise PhotoNotFound(f"album not found: {album_id}")
            owned = _owned(conn, user_id, ids)
            missing = [i for i in ids if i not in owned]
            if missing:
                raise PhotoNotFound(f"photos not found: {missing[:20]}{' ...' if len(missing) > 20 else ''}")
            present = {
                r[0]
                for r in conn.execute("SELECT photo_id FROM album_photos WHERE album_id = ?", (album_id,))
            }
            start = conn.execute(
                "SELECT COALESCE(MAX(position) + 1, 0) FROM album_photos WHERE album_id = ?", (album_id,)
            ).fetchone()[0]
            new = [i for i in ids if i not in present]
            conn.executemany(
                "INSERT INTO album_photos (album_id, photo_id, position) VALUES (?, ?, ?)",
                [(album_id, pid, start + pos) for pos, pid in enumerate(new)],
            )
        return next(a for a in self.list(user_id) if a["id"] == album_id)

    def list(self, user_id: int) -> list[dict[str, Any]]:
        """The user's albums, oldest first, each with its photo ids in album order."""
        with self.db.read() as conn:
            albums = conn.execute("SELECT * FROM albums WHERE user_id = ? ORDER BY id", (user_id,)).fetchall()
            members = conn.execute(
                "SELECT ap.album_id, ap.photo_id FROM album_photos ap JOIN albums a ON a.id = ap.album_id"
                " WHERE a.user_id = ? ORDER BY ap.album_id, ap.position",
                (user_id,),
            ).fetchall()
        by_album: dict[int, list[int]] = {}
        for m in members:
            by_album.setdefault(m["album_id"], []).append(m["photo_id"])
        return [
            {
                "id": a["id"],
                "name": a["name"],
                "description": a["description"],
                "photo_ids": by_album.get(a["id"], []),
                "created_at": a["created_at"],
            }
            for a in albums
        ]


def _owned(conn: sqlite3.Connection, user_id: int, ids: list[int]) -> set[int]:
    owned: set[int] = set()
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        marks = ",".join("?" * len(chunk))
        sql = f"SELECT id FROM photos WHERE user_id = ? AND id IN ({marks})"
        owned.update(r[0] for r in conn.execute(sql, (user_id, *chunk)))
    return owned
