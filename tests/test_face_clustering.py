"""Clustering faces into people: grouping, the same-photo rule, min-faces and threshold, eligibility.

Every rule is checked twice: on the dense reference path and with EXACT_MAX = 1, which sends every group
of two or more faces through the neighbour graph and graph average linkage.
"""

from __future__ import annotations

import numpy as np
import pytest

from shared import face_clustering
from shared.face_clustering import FaceRecord, Person, cluster_faces, eligible_faces

DIM = 64


@pytest.fixture(autouse=True, params=["dense", "graph"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Runs each test on the dense reference path and on the graph path."""
    if request.param == "graph":
        monkeypatch.setattr(face_clustering, "EXACT_MAX", 1)
    return str(request.param)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


@pytest.fixture
def people_centres() -> np.ndarray:
    """Three mutually orthogonal identity directions (cosine distance 1 between people)."""
    return np.eye(DIM)[:3]


def face(
    photo_id: int, centre: np.ndarray, noise: float = 0.05, seed: int = 0, size: float = 80
) -> FaceRecord:
    rng = np.random.default_rng(seed + 1000 * photo_id)
    emb = _unit(centre + noise * rng.standard_normal(DIM) / np.sqrt(DIM))
    return FaceRecord(photo_id=photo_id, bbox=(10, 10, 10 + size, 10 + size), score=0.99, embedding=emb)


def _photo_sets(people: list[Person]) -> list[list[int]]:
    return sorted(p.photo_ids for p in people)


def test_faces_of_each_person_are_grouped(people_centres: np.ndarray) -> None:
    faces = [
        face(pid, people_centres[person])
        for person in range(3)
        for pid in range(person * 10, person * 10 + 4)
    ]
    people = cluster_faces(faces, threshold=0.3, min_faces=2)
    assert _photo_sets(people) == [[0, 1, 2, 3], [10, 11, 12, 13], [20, 21, 22, 23]]


def test_two_faces_of_one_photo_never_share_a_person(people_centres: np.ndarray) -> None:
    a = people_centres[0]
    faces = [face(pid, a) for pid in range(1, 5)] + [face(9, a, seed=1), face(9, a, seed=2)]
    people = cluster_faces(faces, threshold=0.3, min_faces=1)
    for person in people:
        photos = [f.photo_id for f in person.faces]
        assert len(photos) == len(set(photos))
    assert _photo_sets(people) == [[1, 2, 3, 4, 9], [9]]
    # with the usual minimum, the evicted twin is a one-face "person" and gets no album
    assert _photo_sets(cluster_faces(faces, threshold=0.3, min_faces=2)) == [[1, 2, 3, 4, 9]]


def test_a_duplicate_face_does_not_split_its_person(people_centres: np.ndarray) -> None:
    """A collage holding one person twice: the second copy and its look-alike photo stay in one person.

    Photo 5 is a mirrored copy, nearly identical to the right half of the collage (photo 9); a cannot-link
    distance inside the linkage would pair them off into a second group of the same person.
    """
    a = people_centres[0]
    rng = np.random.default_rng(7)
    mirror_look = _unit(a + 0.08 * rng.standard_normal(DIM) / np.sqrt(DIM))
    near = FaceRecord(5, (0, 0, 80, 80), 0.99, _unit(mirror_look + 0.001 * rng.standard_normal(DIM)))
    twin = FaceRecord(9, (0, 0, 80, 80), 0.99, mirror_look)
    faces = [face(pid, a, noise=0.03) for pid in range(1, 5)] + [face(9, a, noise=0.03, seed=3), twin, near]
    people = cluster_faces(faces, threshold=0.3, min_faces=2)
    assert _photo_sets(people) == [[1, 2, 3, 4, 5, 9]]
    assert len(people[0].faces) == 6


def test_an_evicted_face_joins_the_nearest_other_person() -> None:
    """Two faces of photo 9 land in A's cluster; the one that fits B better moves to B, not to nowhere."""
    e = np.eye(DIM)
    a, b = e[0], _unit(e[0] + 0.75 * e[1])  # cosine distance ~0.2 apart
    between = _unit(a + b)  # ~0.05 from each
    faces = [face(pid, a, noise=0.01) for pid in range(1, 4)] + [face(pid, b, noise=0.01) for pid in (4, 5)]
    faces += [FaceRecord(9, (0, 0, 80, 80), 0.99, a), FaceRecord(9, (0, 0, 80, 80), 0.99, between)]
    people = cluster_faces(faces, threshold=0.12, min_faces=1)
    assert _photo_sets(people) == [[1, 2, 3, 9], [4, 5, 9]]
    for person in people:
        assert len({f.photo_id for f in person.faces}) == len(person.faces)


def test_min_faces_drops_small_groups(people_centres: np.ndarray) -> None:
    faces = [face(pid, people_centres[0]) for pid in range(3)] + [face(50, people_centres[1])]
    assert _photo_sets(cluster_faces(faces, threshold=0.3, min_faces=2)) == [[0, 1, 2]]
    assert _photo_sets(cluster_faces(faces, threshold=0.3, min_faces=1)) == [[0, 1, 2], [50]]
    assert cluster_faces(faces, threshold=0.3, min_faces=4) == []


def test_threshold_decides_whether_two_close_people_merge() -> None:
    a = np.eye(DIM)[0]
    b = _unit(np.eye(DIM)[0] + 0.9 * np.eye(DIM)[1])  # cosine distance ~0.26 from a
    faces = [face(pid, a, noise=0.01) for pid in range(3)] + [
        face(pid, b, noise=0.01) for pid in range(10, 13)
    ]
    assert len(cluster_faces(faces, threshold=0.1, min_faces=2)) == 2
    assert len(cluster_faces(faces, threshold=0.4, min_faces=2)) == 1


def test_largest_person_first_and_one_face_edge_cases(people_centres: np.ndarray) -> None:
    faces = [face(pid, people_centres[0]) for pid in range(2)] + [
        face(pid, people_centres[1]) for pid in range(5, 9)
    ]
    people = cluster_faces(faces, threshold=0.3, min_faces=1)
    assert [len(p.faces) for p in people] == [4, 2]
    assert cluster_faces([], threshold=0.3) == []
    assert _photo_sets(cluster_faces([face(3, people_centres[0])], threshold=0.3)) == [[3]]
    with pytest.raises(ValueError):
        cluster_faces(faces, threshold=0.0)


def test_eligible_faces_skips_small_and_unsure_faces(people_centres: np.ndarray) -> None:
    ok = face(1, people_centres[0], size=40)
    small = face(2, people_centres[0], size=20)
    unsure = FaceRecord(3, (0, 0, 80, 80), 0.3, ok.embedding)
    assert eligible_faces([ok, small, unsure], min_score=0.5, min_face_px=24) == [ok]
    assert small.size_px == 20
