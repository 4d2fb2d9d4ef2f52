"""Group face embeddings into people: average-linkage clustering, then one face per photo per person.

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
mirrored photos) away into a second album of the same person.

Scale: up to EXACT_MAX faces the dense n x n matrix is used as is (the reference). Above it, nothing
quadratic in the library is built: each face's nearest neighbours (shared/face_neighbours.py) split the
library into components of faces linked by pairs closer than the threshold; average linkage never joins
faces across components, and the same-photo rule's moves stay inside one too (a face's mean distance to a
group of another component is at least the threshold), so each component is clustered on its own: with
the dense matrix when it has at most EXACT_MAX faces, with graph average linkage (shared/face_linkage.py)
when larger. Mean distances to a group come from its embedding sum (1 - e . sum / n), never a matrix.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.cluster import AgglomerativeClustering

from shared.face_linkage import graph_average_linkage
from shared.face_neighbours import NEIGHBOURS, NeighbourEdges, components, neighbour_edges
from shared.face_progress import Eta, Progress, every_tenth

EXACT_MAX = 2000
"""Most faces clustered with a dense distance matrix (32 MB of float64 at 2000, 3.2 GB at 20000). Below
it the reference algorithm runs unchanged; above it only components of the neighbour graph this large
are clustered densely, larger ones by graph average linkage."""

BATCH_FACES = 500
"""Faces of small components clustered in one dense call (a 500 x 500 matrix: 2 MB, milliseconds)."""


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


def cosine_distances(emb: np.ndarray) -> np.ndarray:
    """Pairwise 1 - cos between the (unit) rows of `emb`."""
    dist = np.clip(1.0 - emb @ emb.T, 0.0, 2.0)
    np.fill_diagonal(dist, 0.0)
    return dist


def embedding_matrix(faces: Sequence[FaceRecord], dtype: type = np.float32) -> np.ndarray:
    """The faces' embeddings as unit rows of one matrix, filled row by row (no float64 detour)."""
    emb: np.ndarray = np.empty((len(faces), np.asarray(faces[0].embedding).size), dtype=dtype)
    for i, f in enumerate(faces):
        emb[i] = np.asarray(f.embedding).ravel()
    emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    return emb


def cluster_faces(
    faces: Sequence[FaceRecord],
    threshold: float,
    min_faces: int = 1,
    *,
    exact_max: int | None = None,
    progress: Progress | None = None,
) -> list[Person]:
    """People among `faces`: largest first, each with at least `min_faces` faces and one face per photo."""
    if threshold <= 0:
        raise ValueError(f"distance threshold must be positive, got {threshold}")
    if not faces:
        return []
    exact_max = EXACT_MAX if exact_max is None else exact_max
    groups = partition(
        embedding_matrix(faces, np.float64 if len(faces) <= exact_max else np.float32),
        np.array([f.photo_id for f in faces]),
        threshold,
        exact_max=exact_max,
        progress=progress,
    )
    people = [Person(tuple(faces[i] for i in sorted(g))) for g in groups if len(g) >= max(1, min_faces)]
    people.sort(key=lambda p: (-len(p.faces), p.photo_ids[0]))
    return people


def partition(
    emb: np.ndarray,
    photos: np.ndarray,
    threshold: float,
    *,
    exact_max: int = EXACT_MAX,
    progress: Progress | None = None,
) -> list[list[int]]:
    """Row indices of `emb` (unit rows) grouped into people, every face in exactly one group.

    `progress` gets a line after the neighbour search and at each tenth of the faces clustered (only for
    libraries above `exact_max`; smaller ones take seconds)."""
    n = emb.shape[0]
    if n <= exact_max:
        return _Clustering(emb, photos, threshold, None, exact_max).people(list(range(n)))
    say = progress or (lambda _: None)
    say(f"clustering {n} faces: searching {NEIGHBOURS} nearest neighbours each")
    edges = neighbour_edges(emb)
    labels = components(n, edges, threshold)
    sizes = np.bincount(labels)
    say(f"neighbours: {len(edges)} pairs, {sizes.size} components, largest {sizes.max()} faces")
    clustering = _Clustering(emb, photos, threshold, edges, exact_max)
    groups: list[list[int]] = []
    order = np.argsort(labels, kind="stable")
    bounds = np.flatnonzero(np.diff(labels[order])) + 1
    eta = Eta(n, "faces")
    due, done = every_tenth(n), 0
    batch: list[int] = []
    for members in np.split(order, bounds):
        done += members.size
        if members.size == 1:
            groups.append([int(members[0])])
        elif members.size > exact_max:
            groups.extend(clustering.people(members.tolist()))
        else:
            # Small components are clustered several at a time: the dense algorithm never joins faces
            # of two components, and one call on a few hundred faces beats hundreds of tiny calls.
            if len(batch) + members.size > min(exact_max, BATCH_FACES):
                groups.extend(clustering.people(batch))
                batch = []
            batch.extend(members.tolist())
        if due(done):
            say(f"clustering: {eta.line(done)}")
    if batch:
        groups.extend(clustering.people(batch))
    return groups


class _Clustering:
    """Clusters subsets of one library: dense up to `exact_max` faces, graph linkage above."""

    def __init__(
        self,
        emb: np.ndarray,
        photos: np.ndarray,
        threshold: float,
        edges: NeighbourEdges | None,
        exact_max: int,
    ) -> None:
        self.emb, self.photos, self.threshold = emb, photos, threshold
        self.edges, self.exact_max = edges, exact_max

    def people(self, members: list[int]) -> list[list[int]]:
        """`members` clustered, then split and re-joined until every group has one face per photo."""
        groups, evicted = self._split(self._clusters(members))
        while evicted:
            leftover = self._join_nearest(evicted, groups)
            # Each split keeps at least one face per group, so `evicted` shrinks until it is empty.
            new_groups, evicted = self._split(self._clusters(leftover))
            groups.extend(new_groups)
        return groups

    def _clusters(self, members: list[int]) -> list[list[int]]:
        """Average-linkage clusters of `members` cut at the threshold."""
        if len(members) <= 1:
            return [members] if members else []
        if len(members) <= self.exact_max or self.edges is None:
            model = AgglomerativeClustering(
                n_clusters=None, metric="precomputed", linkage="average", distance_threshold=self.threshold
            )
            labels = model.fit_predict(cosine_distances(self.emb[members].astype(np.float64)))
            return [[members[j] for j in np.flatnonzero(labels == label)] for label in np.unique(labels)]
        mask = np.zeros(self.emb.shape[0], dtype=bool)
        mask[members] = True
        sub = self.edges.within(mask)
        local = np.full(self.emb.shape[0], -1, dtype=np.int64)
        local[members] = np.arange(len(members))
        found = graph_average_linkage(self.emb[members], local[sub.a], local[sub.b], self.threshold)
        return [[members[j] for j in group] for group in found]

    def _split(self, groups: list[list[int]]) -> tuple[list[list[int]], list[int]]:
        """(groups with one face per photo, the faces evicted from them)."""
        kept_groups: list[list[int]] = []
        evicted: list[int] = []
        for members in groups:
            kept, out = self._one_face_per_photo(members)
            kept_groups.append(kept)
            evicted.extend(out)
        return kept_groups, sorted(evicted)

    def _mean_distance(self, face: int, members: list[int]) -> float:
        return float(
            1.0 - self.emb[face].astype(np.float64) @ self.emb[members].astype(np.float64).mean(axis=0)
        )

    def _join_nearest(self, evicted: list[int], groups: list[list[int]]) -> list[int]:
        """Add each evicted face to the group nearest on average, if within the threshold and free of its
        photo; returns the faces that fit nowhere."""
        sums = np.stack([self.emb[g].astype(np.float64).sum(axis=0) for g in groups])
        counts = np.array([len(g) for g in groups], dtype=np.float64)
        by_photo: dict[int, set[int]] = defaultdict(set)
        for g, members in enumerate(groups):
            for m in members:
                by_photo[int(self.photos[m])].add(g)
        leftover: list[int] = []
        for face in evicted:
            vec = self.emb[face].astype(np.float64)
            mean = 1.0 - (sums @ vec) / counts
            photo = int(self.photos[face])
            mean[list(by_photo[photo])] = np.inf
            best = int(np.argmin(mean))
            if mean[best] >= self.threshold:
                leftover.append(face)
                continue
            groups[best].append(face)
            sums[best] += vec
            counts[best] += 1
            by_photo[photo].add(best)
        return leftover

    def _one_face_per_photo(self, members: list[int]) -> tuple[list[int], list[int]]:
        """Split `members` into (kept, evicted) so kept has one face per photo: the one nearest the rest."""
        by_photo: dict[int, list[int]] = defaultdict(list)
        for m in members:
            by_photo[int(self.photos[m])].append(m)
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
            mean = [self._mean_distance(m, others) for m in same_photo]
            best = same_photo[int(np.argmin(mean))]
            kept.append(best)
            evicted.extend(m for m in same_photo if m != best)
        return sorted(kept), evicted
