"""New faces join the people already found; only the faces left over are clustered.

A new face joins the known person nearest on average (1 - e . sum / count, the clustering's own average
distance) when that is under the threshold and the person has no face of the same photo yet; faces are
placed best match first, against the people as they were before this run, so the outcome does not
depend on upload order. The faces that fit no one are clustered together with the earlier faces that
joined no person (the pool) - but only the pool faces that a chain of pairs closer than the threshold
links to a new face, since nothing else can change - and groups of at least `min_faces` become new
people. On an empty state this is exactly one clustering of every face, as before.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import faiss
import numpy as np

from services.people_state import KnownPerson, PeopleState
from shared.face_clustering import FaceRecord, embedding_matrix, partition
from shared.face_progress import Progress

CANDIDATES = 4
"""Nearest people tried per new face before it counts as left over (the nearer ones may hold its photo)."""

ASSIGN_BLOCK = 512
"""New faces scored against all people at once; bounds the block x people distance matrix."""


@dataclass
class PeopleUpdate:
    """What one run changes: people who gained faces, and new people."""

    grown: dict[int, int] = field(default_factory=dict)
    created: list[int] = field(default_factory=list)
    assigned_faces: int = 0
    clustered_faces: int = 0


def update_people(
    state: PeopleState,
    faces: list[FaceRecord],
    threshold: float,
    min_faces: int,
    progress: Progress | None = None,
) -> PeopleUpdate:
    """Add `faces` (new photos' faces) to `state` in place; returns what changed (person rows)."""
    update = PeopleUpdate()
    if not faces:
        return update
    emb = embedding_matrix(faces)
    photos = np.array([f.photo_id for f in faces], dtype=np.int64)
    if state.sums.shape[1:] != emb.shape[1:]:
        state.sums = np.zeros((0, emb.shape[1]), dtype=np.float32)
    if state.pool.shape[1:] != emb.shape[1:]:
        state.pool = np.zeros((0, emb.shape[1]), dtype=np.float32)
    joined = _assign(state, emb, photos, threshold, update)
    left = np.flatnonzero(~joined)
    update.assigned_faces = int(joined.sum())
    _cluster_leftovers(state, emb[left], photos[left], threshold, min_faces, update, progress)
    return update


def _assign(
    state: PeopleState, emb: np.ndarray, photos: np.ndarray, threshold: float, update: PeopleUpdate
) -> np.ndarray:
    """Join each face to its nearest known person within the threshold; True where a face joined."""
    joined = np.zeros(len(emb), dtype=bool)
    if not state.people:
        return joined
    k = min(CANDIDATES, len(state.people))
    cand = np.empty((len(emb), k), dtype=np.int64)
    cand_d = np.empty((len(emb), k), dtype=np.float64)
    for start in range(0, len(emb), ASSIGN_BLOCK):
        block = emb[start : start + ASSIGN_BLOCK]
        dist = 1.0 - (block @ state.sums.T) / state.counts
        top = (
            np.argpartition(dist, k - 1, axis=1)[:, :k]
            if k < dist.shape[1]
            else np.tile(np.arange(k), (len(block), 1))
        )
        top_d = np.take_along_axis(dist, top, axis=1)
        order = np.argsort(top_d, axis=1, kind="stable")
        cand[start : start + len(block)] = np.take_along_axis(top, order, axis=1)
        cand_d[start : start + len(block)] = np.take_along_axis(top_d, order, axis=1)
    holds = [set(p.photo_ids) | set(p.pending) for p in state.people]
    placed: list[tuple[int, int]] = []
    for face in np.argsort(cand_d[:, 0], kind="stable").tolist():
        photo = int(photos[face])
        for row, d in zip(cand[face].tolist(), cand_d[face].tolist(), strict=True):
            if d >= threshold:
                break
            if photo in holds[row]:
                continue
            holds[row].add(photo)
            placed.append((face, row))
            break
    # sums change only now: every face was matched against the people as they were before this run
    for face, row in placed:
        state.people[row].pending.append(int(photos[face]))
        state.sums[row] += emb[face]
        state.counts[row] += 1
        joined[face] = True
        update.grown[row] = update.grown.get(row, 0) + 1
    return joined


def _cluster_leftovers(
    state: PeopleState,
    emb: np.ndarray,
    photos: np.ndarray,
    threshold: float,
    min_faces: int,
    update: PeopleUpdate,
    progress: Progress | None,
) -> None:
    """Cluster the left-over new faces with the pool faces linked to them; big groups become people."""
    reached = _reachable_pool(state.pool, emb, threshold)
    faces = np.concatenate([state.pool[reached], emb])
    face_photos = np.concatenate([state.pool_photos[reached], photos])
    update.clustered_faces = len(faces)
    in_person = np.zeros(len(faces), dtype=bool)
    if len(faces):
        groups = partition(faces, face_photos, threshold, progress=progress)
        groups.sort(key=lambda g: (-len(g), int(face_photos[g].min())))
        new_sums, new_counts = [], []
        for group in groups:
            if len(group) < max(1, min_faces):
                continue
            in_person[group] = True
            state.people.append(
                KnownPerson(
                    person_id=state.next_person_id, pending=sorted(int(p) for p in face_photos[group])
                )
            )
            update.created.append(len(state.people) - 1)
            new_sums.append(faces[group].sum(axis=0))
            new_counts.append(len(group))
        if new_sums:
            state.sums = np.concatenate([state.sums, np.stack(new_sums).astype(np.float32)])
            state.counts = np.concatenate([state.counts, np.array(new_counts, dtype=np.int64)])
    keep_pool = np.ones(len(state.pool), dtype=bool)
    keep_pool[reached] = False
    state.pool = np.concatenate([state.pool[keep_pool], faces[~in_person]]).astype(np.float32)
    state.pool_photos = np.concatenate([state.pool_photos[keep_pool], face_photos[~in_person]])


def _reachable_pool(pool: np.ndarray, emb: np.ndarray, threshold: float) -> np.ndarray:
    """Indices of pool faces linked to a face of `emb` by a chain of pairs closer than `threshold`."""
    if not len(pool) or not len(emb):
        return np.zeros(0, dtype=np.int64)
    index = faiss.IndexFlatIP(pool.shape[1])
    index.add(np.ascontiguousarray(pool, dtype=np.float32))
    seen = np.zeros(len(pool), dtype=bool)
    frontier = np.ascontiguousarray(emb, dtype=np.float32)
    while len(frontier):
        _, _, ids = index.range_search(frontier, 1.0 - threshold)
        fresh = np.unique(ids[~seen[ids]])
        seen[fresh] = True
        frontier = pool[fresh]
    return np.flatnonzero(seen)
