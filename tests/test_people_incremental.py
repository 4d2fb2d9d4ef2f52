"""Incremental people: new faces join known people, state survives restarts, reruns change nothing."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmarks.synthetic_faces import labels_of, pairwise_scores, synthetic_library
from services.people_albums import AlbumsReport, grow_albums
from services.people_incremental import update_people
from services.people_state import KnownPerson, PeopleState, load_state, save_state
from shared.face_clustering import FaceRecord, cluster_faces
from shared.gallery_client import GalleryClient
from shared.settings import Settings

MODEL = "test:model:512"


def _labels(state: PeopleState, faces: list[FaceRecord]) -> np.ndarray:
    """A label per face (one face per photo here): its person, or a label of its own."""
    person_of = {photo: n for n, p in enumerate(state.people) for photo in p.photo_ids + p.pending}
    return np.array([person_of.get(f.photo_id, len(state.people) + i) for i, f in enumerate(faces)])


def test_new_faces_join_known_people_and_the_rest_form_new_ones(tmp_path: Path) -> None:
    lib = synthetic_library(1500, seed=4)
    photos = np.array([f.photo_id for f in lib.faces])
    alone = np.flatnonzero(np.bincount(photos)[photos] == 1)  # photos with one face: photo = face
    cut = np.quantile(photos[alone], 0.8)
    old = [int(i) for i in alone if photos[i] <= cut]
    new = [int(i) for i in alone if photos[i] > cut]
    state = PeopleState(MODEL)
    first = update_people(state, [lib.faces[i] for i in old], 0.42, min_faces=1)
    assert first.assigned_faces == 0 and len(first.created) == len(state.people)
    # on an empty state the people are exactly one clustering of every face
    reference = cluster_faces([lib.faces[i] for i in old], 0.42, 1)
    assert sorted(p.photo_ids for p in reference) == sorted(sorted(p.pending) for p in state.people)
    before = [(p.person_id, list(p.pending)) for p in state.people]
    save_state(tmp_path, state)
    state = load_state(tmp_path, MODEL)
    second = update_people(state, [lib.faces[i] for i in new], 0.42, min_faces=1)
    assert second.assigned_faces > 0.7 * len(new)
    # stable identities: every known person keeps its id and photos, in the same order
    for (pid, photos_before), person in zip(before, state.people, strict=False):
        assert person.person_id == pid and person.pending[: len(photos_before)] == photos_before
    order = old + new
    faces = [lib.faces[i] for i in order]
    _, _, f1_incremental = pairwise_scores(_labels(state, faces), lib.identities[order])
    at = {f.photo_id: i for i, f in enumerate(faces)}
    groups = [[at[pid] for pid in p.photo_ids] for p in cluster_faces(faces, 0.42, 1)]
    _, _, f1_all = pairwise_scores(labels_of(groups, len(faces)), lib.identities[order])
    assert f1_incremental > f1_all - 0.02


def test_two_new_faces_of_one_photo_never_join_one_person() -> None:
    e = np.eye(8, dtype=np.float32)
    state = PeopleState(MODEL, people=[KnownPerson(1, album_id=5, photo_ids=[1, 2])])
    state.sums, state.counts = (2 * e[0])[None, :], np.array([2])
    near = FaceRecord(9, (0, 0, 80, 80), 0.99, e[0])
    nearish = FaceRecord(9, (0, 0, 80, 80), 0.99, (e[0] + 0.3 * e[1]) / np.linalg.norm(e[0] + 0.3 * e[1]))
    update = update_people(state, [nearish, near], 0.42, min_faces=1)
    assert update.grown == {0: 1} and state.people[0].pending == [9]
    assert int(state.counts[0]) == 3 and np.allclose(state.sums[0], 3 * e[0])
    # the other face of photo 9 became a person of its own (min_faces 1), not a second face of person 1
    assert [p.pending for p in state.people[1:]] == [[9]]


def test_pool_faces_form_a_person_with_faces_uploaded_later() -> None:
    e = np.eye(8, dtype=np.float32)
    state = PeopleState(MODEL)
    update_people(state, [FaceRecord(1, (0, 0, 80, 80), 0.99, e[3])], 0.42, min_faces=2)
    assert state.people == [] and state.pool.shape == (1, 8) and state.pool_photos.tolist() == [1]
    update = update_people(state, [FaceRecord(2, (0, 0, 80, 80), 0.99, e[3])], 0.42, min_faces=2)
    assert update.created == [0] and state.people[0].pending == [1, 2] and state.pool.shape == (0, 8)


def test_state_files_are_replaced_whole(tmp_path: Path) -> None:
    state = PeopleState(MODEL, people=[KnownPerson(1, album_id=3, name="Person 1", photo_ids=[4])])
    state.sums, state.counts = np.ones((1, 4), dtype=np.float32), np.array([1])
    state.scanned = {4, 5}
    save_state(tmp_path, state)
    save_state(tmp_path, state)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["people-2.npz", "people.json"]
    back = load_state(tmp_path, MODEL)
    assert back.people == state.people and back.scanned == {4, 5} and back.sums.tolist() == [[1, 1, 1, 1]]
    assert load_state(tmp_path, "other:model:128").people == []
    (tmp_path / "people.json").write_text("{not json")
    assert load_state(tmp_path, MODEL).people == []
    assert load_state(tmp_path / "absent", MODEL).people == []


class _OldGallery(BaseHTTPRequestHandler):
    """A gallery with the contract's required album routes only: no POST /api/albums/{id}/photos."""

    def do_POST(self) -> None:
        self.send_response(404)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(json.dumps({"detail": "Not Found"}).encode())

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def old_gallery(make_settings: Callable[..., Settings]) -> Iterator[GalleryClient]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _OldGallery)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    settings = make_settings(API_BASE_URL=f"http://127.0.0.1:{server.server_port}", ACCESS_TOKEN="t")
    client = GalleryClient(settings.gallery, internal=False)
    yield client
    client.close()
    server.shutdown()
    server.server_close()


def test_without_the_album_photos_endpoint_photos_stay_pending(
    old_gallery: GalleryClient, tmp_path: Path
) -> None:
    state = PeopleState(
        MODEL, people=[KnownPerson(1, album_id=3, name="Person 1", photo_ids=[4], pending=[7])]
    )
    state.sums, state.counts = np.ones((1, 4), dtype=np.float32), np.array([2])
    report, lines = AlbumsReport(), []
    grow_albums(old_gallery, state, tmp_path, report, lines.append)
    assert state.people[0].pending == [7] and report.photos_added == 0
    assert "1 photos stay pending" in lines[-1]
