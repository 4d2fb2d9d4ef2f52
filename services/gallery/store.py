"""The gallery's data in SQLite: photos with their ML results and faces; albums and text queries beside."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.gallery.albums import AlbumStore
from services.gallery.db import Database, utc_now
from services.gallery.errors import DimensionMismatch, PhotoNotFound
from services.gallery.text_queries import TextQueryStore
from services.gallery.uploads import UploadDir, relative_path, url_for
from services.gallery.vectors import cosine_nearest, from_blob, to_blob

DB_FILENAME = "gallery.sqlite3"


@dataclass(frozen=True)
class NewFace:
    """One detected face as posted by a face worker."""

    model: str
    embedding: Sequence[float]
    bbox: dict[str, float]
    score: float | None = None
    landmarks: list[list[float]] | None = field(default=None)


def _photo(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "user_id": row["user_id"],
        "url": url_for(row["filename"]),
        "path": relative_path(row["filename"]),
        "created_at": row["created_at"],
        "processing_status": row["processing_status"],
    }


class GalleryStore:
    """Every read and write the routes need; thread-safe (one SQLite connection per thread)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.uploads = UploadDir(self.root)
        self.db = Database(self.root / DB_FILENAME)
        self.albums = AlbumStore(self.db)
        self.text_queries = TextQueryStore(self.db)

    def close(self) -> None:
        self.db.close()

    # -- photos ---------------------------------------------------------------------------------
    def add_photo(self, user_id: int, filename: str) -> dict[str, Any]:
        """Create the row for a file already stored under uploads/original."""
        with self.db.write() as conn:
            cur = conn.execute(
                "INSERT INTO photos (user_id, filename, created_at) VALUES (?, ?, ?)",
                (user_id, filename, utc_now()),
            )
            row = conn.execute("SELECT * FROM photos WHERE id = ?", (cur.lastrowid,)).fetchone()
        return _photo(row)

    def get_photo(self, photo_id: int, user_id: int | None = None) -> dict[str, Any]:
        """One photo; PhotoNotFound when absent or owned by another user."""
        row = self.db.connection().execute("SELECT * FROM photos WHERE id = ?", (photo_id,)).fetchone()
        if row is None or (user_id is not None and row["user_id"] != user_id):
            raise PhotoNotFound(f"photo {photo_id} not found")
        return _photo(row)

    def photo_by_filename(self, filename: str) -> dict[str, Any] | None:
        row = self.db.connection().execute("SELECT * FROM photos WHERE filename = ?", (filename,)).fetchone()
        return _photo(row) if row else None

    def list_photos(self, user_id: int, limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
        """A page of the user's photos, newest first, and the user's total."""
        with self.db.read() as conn:
            total = conn.execute("SELECT COUNT(*) FROM photos WHERE user_id = ?", (user_id,)).fetchone()[0]
            rows = conn.execute(
                "SELECT * FROM photos WHERE user_id = ? ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?",
                (user_id, limit, offset),
            ).fetchall()
        return [_photo(r) for r in rows], int(total)

    def photo_detail(self, photo_id: int, user_id: int) -> dict[str, Any]:
        """A photo with its ML results and faces (vectors summarised by their dimension)."""
        with self.db.read():
            photo = self.get_photo(photo_id, user_id)
            results = self.ml_results(photo_id, with_embeddings=False)
            faces = self.faces(photo_id, with_embeddings=False)
            processed = (
                self.db.connection()
                .execute("SELECT faces_processed_at FROM photos WHERE id = ?", (photo_id,))
                .fetchone()[0]
            )
        return {**photo, "ml_results": results, "faces": faces, "faces_processed_at": processed}

    # -- ML results -----------------------------------------------------------------------------
    def upsert_ml_result(
        self,
        photo_id: int,
        *,
        model: str,
        modality: str,
        status: str,
        embedding: Sequence[float] | None = None,
        ml_result: dict[str, Any] | None = None,
        error: str | None = None,
        caption: str | None = None,
    ) -> str:
        """Store one (photo, model, modality) result, replacing any earlier one; return the photo status."""
        blob = to_blob(embedding) if embedding else None
        dim = len(embedding) if embedding else 0
        with self.db.write() as conn:
            if conn.execute("SELECT 1 FROM photos WHERE id = ?", (photo_id,)).fetchone() is None:
                raise PhotoNotFound(f"photo {photo_id} not found")
            if blob is not None:
                self._check_dim(conn, "ml_results", dim, photo_id, model, modality)
            conn.execute(
                "INSERT INTO ml_results (photo_id, model, modality, dim, embedding, ml_result, status, error,"
                " caption, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (photo_id, model, modality) DO UPDATE SET dim = excluded.dim,"
                " embedding = excluded.embedding, ml_result = excluded.ml_result, status = excluded.status,"
                " error = excluded.error, caption = excluded.caption, updated_at = excluded.updated_at",
                (
                    photo_id,
                    model,
                    modality,
                    dim,
                    blob,
                    json.dumps(ml_result) if ml_result is not None else None,
                    status,
                    error,
                    caption,
                    utc_now(),
                ),
            )
            # One failed capability marks the photo failed until a later callback replaces that row.
            statuses = {
                r[0] for r in conn.execute("SELECT status FROM ml_results WHERE photo_id = ?", (photo_id,))
            }
            overall = "failed" if "failed" in statuses else "done"
            conn.execute("UPDATE photos SET processing_status = ? WHERE id = ?", (overall, photo_id))
        return overall

    def ml_results(self, photo_id: int, with_embeddings: bool = True) -> list[dict[str, Any]]:
        """Stored results of one photo, ordered by model then modality."""
        rows = (
            self.db.connection()
            .execute("SELECT * FROM ml_results WHERE photo_id = ? ORDER BY model, modality", (photo_id,))
            .fetchall()
        )
        out = []
        for r in rows:
            item: dict[str, Any] = {
                "model": r["model"],
                "modality": r["modality"],
                "dim": r["dim"],
                "status": r["status"],
                "caption": r["caption"],
                "error": r["error"],
                "updated_at": r["updated_at"],
                "ml_result": json.loads(r["ml_result"]) if r["ml_result"] is not None else None,
            }
            if with_embeddings:
                item["embedding"] = from_blob(r["embedding"]) if r["embedding"] is not None else []
            out.append(item)
        return out

    # -- faces ----------------------------------------------------------------------------------
    def replace_faces(self, photo_id: int, faces: Sequence[NewFace]) -> int:
        """Replace the photo's faces with `faces` (empty: processed, no face); return how many."""
        with self.db.write() as conn:
            if conn.execute("SELECT 1 FROM photos WHERE id = ?", (photo_id,)).fetchone() is None:
                raise PhotoNotFound(f"photo {photo_id} not found")
            dims: dict[str, int] = {}
            for face in faces:
                if dims.setdefault(face.model, len(face.embedding)) != len(face.embedding):
                    raise DimensionMismatch(f"faces of model {face.model!r} have different dimensions")
            for model, dim in dims.items():
                self._check_dim(conn, "faces", dim, photo_id, model)
            conn.execute("DELETE FROM faces WHERE photo_id = ?", (photo_id,))
            conn.executemany(
                "INSERT INTO faces (photo_id, model, dim, embedding, bbox, score, landmarks)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        photo_id,
                        f.model,
                        len(f.embedding),
                        to_blob(f.embedding),
                        json.dumps(f.bbox),
                        f.score,
                        json.dumps(f.landmarks) if f.landmarks is not None else None,
                    )
                    for f in faces
                ],
            )
            conn.execute("UPDATE photos SET faces_processed_at = ? WHERE id = ?", (utc_now(), photo_id))
            # Faces arrived: an earlier failed face callback (modality 'face') no longer holds.
            cleared = conn.execute(
                "DELETE FROM ml_results WHERE photo_id = ? AND modality = 'face'", (photo_id,)
            )
            if cleared.rowcount:
                statuses = {
                    r[0]
                    for r in conn.execute("SELECT status FROM ml_results WHERE photo_id = ?", (photo_id,))
                }
                overall = "failed" if "failed" in statuses else "done"
                conn.execute("UPDATE photos SET processing_status = ? WHERE id = ?", (overall, photo_id))
        return len(faces)

    def faces(self, photo_id: int, with_embeddings: bool = True) -> list[dict[str, Any]]:
        """The photo's faces in the order they were posted."""
        rows = (
            self.db.connection()
            .execute("SELECT * FROM faces WHERE photo_id = ? ORDER BY id", (photo_id,))
            .fetchall()
        )
        out = []
        for r in rows:
            item: dict[str, Any] = {
                "id": r["id"],
                "model": r["model"],
                "dim": r["dim"],
                "bbox": json.loads(r["bbox"]),
                "score": r["score"],
                "landmarks": json.loads(r["landmarks"]) if r["landmarks"] else None,
            }
            if with_embeddings:
                item["embedding"] = from_blob(r["embedding"])
            out.append(item)
        return out

    # -- search ---------------------------------------------------------------------------------
    def search(
        self, user_id: int, model: str, modality: str, embedding: Sequence[float], limit: int
    ) -> list[tuple[dict[str, Any], float]]:
        """The user's photos nearest to `embedding` among done results of model+modality."""
        rows = (
            self.db.connection()
            .execute(
                "SELECT p.*, m.embedding AS vec FROM ml_results m JOIN photos p ON p.id = m.photo_id"
                " WHERE p.user_id = ? AND m.model = ? AND m.modality = ? AND m.status = 'done'"
                " AND m.embedding IS NOT NULL ORDER BY p.id",
                (user_id, model, modality),
            )
            .fetchall()
        )
        hits = cosine_nearest(embedding, [r["vec"] for r in rows], limit)
        return [(_photo(rows[i]), dist) for i, dist in hits]

    # -- helpers --------------------------------------------------------------------------------
    @staticmethod
    def _check_dim(
        conn: sqlite3.Connection, table: str, dim: int, photo_id: int, model: str, modality: str | None = None
    ) -> None:
        """Refuse a vector whose length differs from the model's vectors on other photos."""
        sql = f"SELECT DISTINCT dim FROM {table} WHERE model = ? AND photo_id != ? AND dim > 0"
        args: tuple[Any, ...] = (model, photo_id)
        if modality is not None:
            sql += " AND modality = ?"
            args += (modality,)
        stored = sorted(r[0] for r in conn.execute(sql, args))
        if stored and stored != [dim]:
            what = f"{model}/{modality}" if modality else model
            raise DimensionMismatch(f"{what} vectors are stored with dimension {stored}, got {dim}")
