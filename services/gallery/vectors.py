"""Embeddings as SQLite blobs, and brute-force cosine nearest neighbours over them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from services.gallery.errors import DimensionMismatch, ZeroVector

BLOB_DTYPE = np.dtype("<f8")
"""Stored as little-endian float64 so read-back returns exactly the floats the worker sent."""


def to_blob(values: Sequence[float]) -> bytes:
    """Pack a vector for storage."""
    return np.asarray(values, dtype=BLOB_DTYPE).tobytes()


def from_blob(blob: bytes) -> list[float]:
    """Unpack a stored vector into plain floats."""
    return [float(v) for v in np.frombuffer(blob, dtype=BLOB_DTYPE)]


def cosine_nearest(query: Sequence[float], blobs: Sequence[bytes], limit: int) -> list[tuple[int, float]]:
    """(index into `blobs`, cosine distance) of the `limit` nearest stored vectors, nearest first.

    Stored vectors of norm zero are skipped; ties keep storage order so results are deterministic.
    """
    q = np.asarray(query, dtype=np.float64)
    q_norm = float(np.linalg.norm(q))
    if q_norm == 0.0 or not np.isfinite(q_norm):
        raise ZeroVector("query embedding has zero (or non-finite) norm")
    if not blobs:
        return []
    matrix = np.stack([np.frombuffer(b, dtype=BLOB_DTYPE) for b in blobs]) if _same_len(blobs) else None
    if matrix is None or matrix.shape[1] != q.shape[0]:
        dims = sorted({len(b) // BLOB_DTYPE.itemsize for b in blobs})
        raise DimensionMismatch(f"query has dimension {q.shape[0]}, stored vectors have {dims}")
    norms = np.linalg.norm(matrix, axis=1)
    valid = norms > 0
    sims = np.full(len(blobs), -np.inf)
    sims[valid] = (matrix[valid] @ q) / (norms[valid] * q_norm)
    order = np.argsort(-sims, kind="stable")
    # Clamped: rounding can push 1 - cos a hair below 0 for a vector and itself.
    hits = [(int(i), min(2.0, max(0.0, float(1.0 - sims[i])))) for i in order if valid[i]]
    return hits[:limit]


def _same_len(blobs: Sequence[bytes]) -> bool:
    return len({len(b) for b in blobs}) == 1
