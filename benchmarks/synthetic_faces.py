"""Synthetic face embeddings with known identities, shaped like a family photo library's faces.

ArcFace-style statistics (512-d, unit length): two photos of one person sit ~0.3-0.4 apart in cosine
distance, different people ~1.0 (near-orthogonal), relatives ~0.6. Person sizes follow a power law (many
people seen once or twice, a few seen in thousands of photos); some faces are near-duplicates (the same
shot uploaded twice, or a burst), some are outliers (a stranger or a false detection, its own identity).
Group photos put faces of different people into one photo, so the same-photo rule has work to do.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shared.face_clustering import FaceRecord

DIM = 512


@dataclass(frozen=True)
class SyntheticLibrary:
    """Faces (photo ids assigned) and the identity each face truly belongs to."""

    faces: list[FaceRecord]
    identities: np.ndarray


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _around(centres: np.ndarray, spread: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Points at cosine similarity ~cos(spread) from their centre, in a random direction."""
    noise = rng.standard_normal(centres.shape).astype(np.float32)
    noise -= (noise * centres).sum(axis=1, keepdims=True) * centres
    noise = _unit(noise)
    return _unit(np.cos(spread)[:, None] * centres + np.sin(spread)[:, None] * noise)


def synthetic_library(n_faces: int, seed: int = 0, dim: int = DIM) -> SyntheticLibrary:
    """About `n_faces` faces of people with power-law sizes, near-duplicates, outliers and group photos."""
    rng = np.random.default_rng(seed)
    n_outliers = n_faces // 50
    n_dups = n_faces // 20
    largest = max(20, n_faces // 100)
    sizes: list[int] = []
    left = n_faces - n_outliers - n_dups
    while left > 0:
        size = min(left, largest, int(rng.pareto(1.1)) + 1)
        sizes.append(size)
        left -= size
    people = len(sizes)
    centres = _unit(rng.standard_normal((people, dim)).astype(np.float32))
    # one person in ten has a relative: a centre ~0.19 apart (cos 0.81), often confused
    relatives = rng.choice(people, size=people // 10, replace=False)
    centres[relatives[1::2]] = _around(
        centres[relatives[0::2][: len(relatives[1::2])]], np.full(len(relatives[1::2]), 0.62), rng
    )
    identities = np.repeat(np.arange(people), sizes)
    # per person a spread: cos 0.9-0.8 to their centre, so pairs ~0.2-0.35 apart; one in ten looser
    spread = np.where(rng.random(people) < 0.1, 0.7, rng.uniform(0.45, 0.62, size=people))[identities]
    emb = _around(centres[identities], spread, rng)
    dup_of = rng.choice(len(emb), size=n_dups)
    dups = _around(emb[dup_of], np.full(n_dups, 0.05), rng)
    outliers = _unit(rng.standard_normal((n_outliers, dim)).astype(np.float32))
    emb = np.concatenate([emb, dups, outliers]).astype(np.float32)
    identities = np.concatenate([identities, identities[dup_of], people + np.arange(n_outliers)])
    photos = _photo_ids(identities, rng)
    faces = [FaceRecord(int(p), (0.0, 0.0, 100.0, 100.0), 0.99, e) for p, e in zip(photos, emb, strict=True)]
    return SyntheticLibrary(faces, identities)


def _photo_ids(identities: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Photo per face: most faces alone in their photo, one in five in a group photo of 2-4 people."""
    n = len(identities)
    order = rng.permutation(n)
    photos = np.empty(n, dtype=np.int64)
    photo, i = 1, 0
    while i < n:
        take = 1 if rng.random() < 0.8 else int(rng.integers(2, 5))
        photos[order[i : i + take]] = photo
        photo, i = photo + 1, i + take
    return photos


def pairwise_scores(labels: np.ndarray, truth: np.ndarray) -> tuple[float, float, float]:
    """(precision, recall, F1) over pairs of faces: a pair is positive when both share a label."""

    def pairs(*keys: np.ndarray) -> float:
        _, counts = np.unique(np.stack(keys), axis=1, return_counts=True)
        return float((counts * (counts - 1) // 2).sum())

    same_both, same_pred, same_true = pairs(labels, truth), pairs(labels), pairs(truth)
    precision = same_both / same_pred if same_pred else 1.0
    recall = same_both / same_true if same_true else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def labels_of(groups: list[list[int]], n: int) -> np.ndarray:
    """A label per face from a partition given as index groups."""
    labels = np.full(n, -1, dtype=np.int64)
    for label, group in enumerate(groups):
        labels[group] = label
    return labels
