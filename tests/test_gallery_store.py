"""The gallery's SQLite store on its own: persistence, upserts, dimensions, concurrency."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from services.gallery.errors import BadUpload, DimensionMismatch, PhotoNotFound, ZeroVector
from services.gallery.store import GalleryStore, NewFace
from services.gallery.uploads import UploadDir, unique_name
from services.gallery.vectors import cosine_nearest, to_blob


@pytest.fixture
def store(tmp_path: Path):
    s = GalleryStore(tmp_path)
    yield s
    s.close()


def _photo(store: GalleryStore, user_id: int = 1) -> int:
    name = store.uploads.save_bytes("x.jpg", b"not really a jpeg")
    return int(store.add_photo(user_id, name)["id"])


def test_wal_mode_and_data_survive_reopen(tmp_path: Path) -> None:
    store = GalleryStore(tmp_path)
    assert store.db.journal_mode() == "wal"
    pid = _photo(store)
    store.upsert_ml_result(pid, model="m", modality="image", status="done", embedding=[0.1, 0.2, 0.3])
    store.close()

    again = GalleryStore(tmp_path)
    try:
        assert again.get_photo(pid)["processing_status"] == "done"
        assert again.ml_results(pid)[0]["embedding"] == [0.1, 0.2, 0.3]
    finally:
        again.close()


def test_upsert_keeps_one_row_per_model_and_modality(store: GalleryStore) -> None:
    pid = _photo(store)
    for _ in range(2):
        store.upsert_ml_result(pid, model="m", modality="image", status="done", embedding=[1.0, 0.0])
    store.upsert_ml_result(
        pid, model="m", modality="caption", status="done", embedding=[0.0, 1.0], caption="a cat"
    )
    rows = store.ml_results(pid)
    assert [(r["model"], r["modality"]) for r in rows] == [("m", "caption"), ("m", "image")]
    assert rows[0]["caption"] == "a cat"


def test_photo_status_follows_failed_then_retried_result(store: GalleryStore) -> None:
    pid = _photo(store)
    assert store.get_photo(pid)["processing_status"] == "pending"
    store.upsert_ml_result(pid, model="m", modality="image", status="done", embedding=[1.0])
    assert (
        store.upsert_ml_result(pid, model="m", modality="caption", status="failed", error="boom") == "failed"
    )
    assert store.get_photo(pid)["processing_status"] == "failed"
    store.upsert_ml_result(pid, model="m", modality="caption", status="done", embedding=[1.0])
    assert store.get_photo(pid)["processing_status"] == "done"


def test_unknown_photo_is_refused(store: GalleryStore) -> None:
    with pytest.raises(PhotoNotFound):
        store.upsert_ml_result(999, model="m", modality="image", status="done", embedding=[1.0])
    with pytest.raises(PhotoNotFound):
        store.replace_faces(999, [])


def test_dimension_must_match_other_photos_of_the_model(store: GalleryStore) -> None:
    a, b = _photo(store), _photo(store)
    store.upsert_ml_result(a, model="m", modality="image", status="done", embedding=[1.0, 0.0, 0.0])
    with pytest.raises(DimensionMismatch):
        store.upsert_ml_result(b, model="m", modality="image", status="done", embedding=[1.0, 0.0])
    # Another model, or a re-upsert of the only row, may use its own dimension.
    store.upsert_ml_result(b, model="other", modality="image", status="done", embedding=[1.0, 0.0])
    store.upsert_ml_result(a, model="m", modality="image", status="done", embedding=[1.0, 0.0])


def test_faces_are_replaced_not_appended(store: GalleryStore) -> None:
    pid = _photo(store)
    face = NewFace(model="arc", embedding=[0.5, 0.5], bbox={"x1": 1, "y1": 2, "x2": 3, "y2": 4}, score=0.9)
    store.replace_faces(pid, [face, face])
    store.replace_faces(pid, [face])
    assert len(store.faces(pid)) == 1
    store.replace_faces(pid, [])
    assert store.faces(pid) == []
    assert store.photo_detail(pid, 1)["faces_processed_at"] is not None


def test_album_refuses_photos_of_another_user(store: GalleryStore) -> None:
    mine, theirs = _photo(store, user_id=1), _photo(store, user_id=2)
    with pytest.raises(PhotoNotFound, match=str(theirs)):
        store.albums.create(1, "a", "", [mine, theirs])
    assert store.albums.list(1) == []
    album = store.albums.create(1, "a", "d", [mine, mine])
    assert album["photo_ids"] == [mine]


def test_concurrent_writers_from_many_threads(store: GalleryStore) -> None:
    ids = [_photo(store) for _ in range(8)]
    errors: list[BaseException] = []

    def work(pid: int) -> None:
        try:
            for i in range(20):
                store.upsert_ml_result(
                    pid, model="m", modality="image", status="done", embedding=[float(i), 1.0]
                )
                store.replace_faces(
                    pid, [NewFace("arc", [1.0, float(i)], {"x1": 0, "y1": 0, "x2": 1, "y2": 1})]
                )
        except BaseException as exc:  # collected: a thread's exception would otherwise vanish
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(pid,)) for pid in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for pid in ids:
        assert store.ml_results(pid)[0]["embedding"] == [19.0, 1.0]
        assert [f["embedding"] for f in store.faces(pid)] == [[1.0, 19.0]]


def test_cosine_nearest_orders_and_checks() -> None:
    blobs = [to_blob([1.0, 0.0]), to_blob([0.0, 1.0]), to_blob([0.0, 0.0]), to_blob([0.7, 0.7])]
    hits = cosine_nearest([1.0, 0.1], blobs, limit=10)
    assert [i for i, _ in hits] == [0, 3, 1]  # the zero vector is skipped
    assert hits[0][1] == pytest.approx(1 - 1 / (1.01**0.5))
    with pytest.raises(DimensionMismatch):
        cosine_nearest([1.0, 0.0, 0.0], blobs, limit=1)
    with pytest.raises(ZeroVector):
        cosine_nearest([0.0, 0.0], blobs, limit=1)


def test_upload_names_are_unique_and_safe(tmp_path: Path) -> None:
    uploads = UploadDir(tmp_path)
    a = uploads.save_bytes("../../etc/My Photo.JPG", b"1")
    b = uploads.save_bytes("../../etc/My Photo.JPG", b"1")
    assert a != b and a.endswith("_My_Photo.jpg") and "/" not in a
    assert uploads.file(a) == tmp_path / "uploads" / "original" / a
    assert uploads.file("../gallery.sqlite3") is None
    with pytest.raises(BadUpload):
        unique_name("notes.txt")
    with pytest.raises(BadUpload):
        uploads.save_bytes("empty.png", b"")
