"""Group face embeddings into people: agglomerative clustering, then one face per photo per person.

Why average-linkage agglomerative clustering on cosine distance, cut at FACE_DISTANCE_THRESHOLD:
- the number of people is unknown, and a distance cut is the knob users already tune (the legacy runner's
  FACE_DISTANCE_THRESHOLD), with the same meaning: faces closer than it are the same person;
- average linkage joins two groups when their faces are close *on average*, so one blurred or profile
  face neither chains two people together (single linkage's failure) nor splits a person whose photos
  span years (complete linkage demands every pair be close);
- HDBSCAN would need a density parameter with no intuitive unit, and labels sparse people as noise.
The same-photo rule (two faces of one photo are never one person) is enforced after clustering: a group
holding several faces of one photo keeps the one nearest its other members; each evicted face joins the
nearest other group within the threshold that lacks its photo, and the rest are clustered again among
themselves, until no group breaks the rule. A cannot-link *distance* inside the linkage was tried and
rejected: with a collage of one person twice, the second copy drags its nearest neighbours (e.g. the
mirrored photos) away into a second album of the same person. Memory is O(n^2) in faces, which is why
the CLI caps photos with MAX_PHOTOS.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.cluster import AgglomerativeClustering


@dataclass(frozen=True)
class FaceRecord:
    """One face found in one photo, as clustering sees it."""

    photo_id: int
    bbox: tuple[float, float, float, float]
    score: float
    embedding: np.ndarray

    @property
    def size_px(self) -> float:
        """The shorter side of the face box, in pixels."""
        x1, y1, x2, y2 = self.bbox
        return min(x2 - x1, y2 - y1)


@dataclass(frozen=True)
class Person:
    """A group of faces judged to be one person."""

    faces: tuple[FaceRecord, ...]

    @property
    def photo_ids(self) -> list[int]:
        return sorted({f.photo_id for f in self.faces})


def eligible_faces(faces: Sequence[FaceRecord], min_score: float, min_face_px: float) -> list[FaceRecord]:
    """Faces confident and large enough to recognise; the rest are too unreliable to group."""
    return [f for f in faces if f.score >= min_score and f.size_px >= min_face_px]


def cosine_distances(faces: Sequence[FaceRecord]) -> np.ndarray:
    """Pairwise 1 - cos between (re-normalised) embeddings."""
    emb = np.stack([np.asarray(f.embedding, dtype=np.float64) for f in faces])
    emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    dist = np.clip(1.0 - emb @ emb.T, 0.0, 2.0)
    np.fill_diagonal(dist, 0.0)
    return dist


def cluster_faces(faces: Sequence[FaceRecord], threshold: float, min_faces: int = 1) -> list[Person]:
    """People among `faces`: largest first, each with at least `min_faces` faces and one face per photo."""
    if threshold <= 0:
        raise ValueError(f"distance threshold must be positive, got {threshold}")
    if not faces:
        return []
    dist = cosine_distances(faces)
    photos = np.array([f.photo_id for f in faces])
    groups, evicted = _split(_clusters(list(range(len(faces))), dist, threshold), dist, photos)
    while evicted:
        leftover = [i for i in evicted if not _join_nearest(i, groups, dist, photos, threshold)]
        # Each split keeps at least one face per group, so `evicted` shrinks until it is empty.
        new_groups, evicted = _split(_clusters(leftover, dist, threshold), dist, photos)
        groups.extend(new_groups)
    people = [Person(tuple(faces[i] for i in sorted(g))) for g in groups if len(g) >= max(1, min_faces)]
    people.sort(key=lambda p: (-len(p.faces), p.photo_ids[0]))
    return people


def _clusters(members: list[int], dist: np.ndarray, threshold: float) -> list[list[int]]:
    """Average-linkage clusters of `members` (indices into `dist`) cut at `threshold`."""
    if len(members) <= 1:
        return [members] if members else []
    model = AgglomerativeClustering(
        n_clusters=None, metric="precomputed", linkage="average", distance_threshold=threshold
    )
    labels = model.fit_predict(dist[np.ix_(members, members)])
    return [[members[j] for j in np.flatnonzero(labels == label)] for label in np.unique(labels)]


def _split(
    groups: list[list[int]], dist: np.ndarray, photos: np.ndarray
) -> tuple[list[list[int]], list[int]]:
    """(groups with one face per photo, the faces evicted from them)."""
    kept_groups: list[list[int]] = []
    evicted: list[int] = []
    for members in groups:
        kept, out = _one_face_per_photo(members, dist, photos)
        kept_groups.append(kept)
        evicted.extend(out)
    return kept_groups, sorted(evicted)


def _join_nearest(
    face: int, groups: list[list[int]], dist: np.ndarray, photos: np.ndarray, threshold: float
) -> bool:
    """Add `face` to the group nearest on average, if within `threshold` and free of its photo."""
    best, best_d = -1, threshold
    for g, members in enumerate(groups):
        if any(photos[m] == photos[face] for m in members):
            continue
        d = float(np.mean(dist[face, members]))
        if d < best_d:
            best, best_d = g, d
    if best < 0:
        return False
    groups[best].append(face)
    return True


def _one_face_per_photo(
    members: list[int], dist: np.ndarray, photos: np.ndarray
) -> tuple[list[int], list[int]]:
    """Split `members` into (kept, evicted) so kept has one face per photo: the one nearest the rest."""
    by_photo: dict[int, list[int]] = defaultdict(list)
    for m in members:
        by_photo[int(photos[m])].append(m)
    if all(len(v) == 1 for v in by_photo.values()):
        return members, []
    unique = [v[0] for v in by_photo.values() if len(v) == 1]
    anchors = unique or members
    kept: list[int] = []
    evicted: list[int] = []
    for same_photo in by_photo.values():
        if len(same_photo) == 1:
            kept.append(same_photo[0])
            continue
        others = [a for a in anchors if a not in same_photo] or anchors
        mean = [float(np.mean(dist[m, others])) for m in same_photo]
        best = same_photo[int(np.argmin(mean))]
        kept.append(best)
        evicted.extend(m for m in same_photo if m != best)
    return sorted(kept), evicted
