"""Idempotent callbacks: the same key on every redelivery of a result, and a gallery that stores it once."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.errors import GalleryRejected
from shared.gallery_client import GalleryClient
from shared.gallery_contract import MlResultIn
from shared.idempotency import callback_scope, job_digest
from shared.settings import Settings
from tests.fixtures.gallery import GalleryServer, write_jpeg
from tests.fixtures.pipeline import Pipeline

JOB = {"photo_id": 7, "user_id": 1, "path": "./a.jpg", "tasks": ["clip"]}


def result(value: float) -> MlResultIn:
    return MlResultIn(model="m1", modality="image", embedding=[value, 1.0], processing_status="done")


@pytest.fixture
def client(gallery_server: GalleryServer, make_settings: Callable[..., Settings]) -> Iterator[GalleryClient]:
    settings = make_settings(**gallery_server.env(), MINDSIGHT_GALLERY_RETRIES="0")
    c = GalleryClient(settings.gallery)
    try:
        yield c
    finally:
        c.close()


def test_the_key_depends_on_the_job_not_on_its_key_order() -> None:
    reordered = dict(reversed(list(JOB.items())))
    with callback_scope("clip", JOB) as a, callback_scope("clip", reordered) as b:
        assert a.key(7, "m1", "done") == b.key(7, "m1", "done")
    with callback_scope("clip", JOB) as scope:
        keys = {
            scope.key(7, "m1", "done"),
            scope.key(7, "m2", "done"),
            scope.key(7, "m1", "failed"),
            scope.key(8, "m1", "done"),
        }
    assert len(keys) == 4
    assert job_digest(JOB) != job_digest({**JOB, "backfill": "run-1"})


def test_a_repeated_key_is_answered_from_the_store_and_changes_nothing(
    gallery_server: GalleryServer, client: GalleryClient, tmp_path: Path
) -> None:
    photo_id, path = gallery_server.add_photo(write_jpeg(tmp_path / "a.jpg"))
    job = {**JOB, "photo_id": photo_id, "path": path}
    with callback_scope("clip", job):
        client.post_ml_result(photo_id, result(0.5))
        [first] = gallery_server.ml_results(photo_id)
        client.post_ml_result(photo_id, result(0.5))  # a redelivery
        client.post_ml_result(photo_id, result(0.9))  # a redelivery computed on other hardware
    [after] = gallery_server.ml_results(photo_id)
    assert after["updated_at"] == first["updated_at"]
    assert after["embedding"] == first["embedding"]
    calls = gallery_server.received()
    assert [c["replayed"] for c in calls] == [False, True, True]
    assert len({c["key"] for c in calls}) == 1 and calls[0]["key"].startswith("ms1-clip-")
    assert all(c["status"] == 200 for c in calls)


def test_without_a_job_scope_no_key_is_sent_and_every_post_applies(
    gallery_server: GalleryServer, client: GalleryClient, tmp_path: Path
) -> None:
    photo_id, _ = gallery_server.add_photo(write_jpeg(tmp_path / "a.jpg"))
    client.post_ml_result(photo_id, result(0.5))
    [first] = gallery_server.ml_results(photo_id)
    client.post_ml_result(photo_id, result(0.9))
    assert [c["key"] for c in gallery_server.received()] == [None, None]
    [second] = gallery_server.ml_results(photo_id)
    assert second["embedding"] != first["embedding"]


def test_a_key_reused_on_another_path_is_refused(
    gallery_server: GalleryServer, client: GalleryClient, tmp_path: Path
) -> None:
    a, _ = gallery_server.add_photo(write_jpeg(tmp_path / "a.jpg"))
    b, _ = gallery_server.add_photo(write_jpeg(tmp_path / "b.jpg"))
    with callback_scope("clip", JOB) as scope:
        client.post_ml_result(a, result(0.5))
        # Same scope and model, other photo id: a different key, applied.
        client.post_ml_result(b, result(0.5))
    assert scope.key(a, "m1", "done") != scope.key(b, "m1", "done")
    key = gallery_server.received()[0]["key"]
    with pytest.raises(GalleryRejected, match="422"):
        client._request(  # the same key on another path: refused, nothing stored
            "POST",
            f"/api/internal/photos/{b}/ml_result",
            json=result(0.1).wire(),
            headers={"Idempotency-Key": key},
        )


@pytest.mark.slow
def test_a_worker_killed_mid_batch_redelivers_with_the_same_keys_and_the_gallery_stores_once(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    photo_id, path = pipeline.gallery.add_photo(write_jpeg(tmp_path / "k.jpg"))
    pipeline.push_photo(photo_id, path, ["clip"])
    # Every callback is held 3 s before the gallery applies it: the first label's callback lands, and the
    # worker is killed while the second one waits, before the photo counts as delivered.
    pipeline.gallery.set_fault(delay_s=3, status=None)
    pipeline.router()
    victim = pipeline.worker("clip")

    def landed() -> list[dict[str, Any]]:
        return [
            c
            for c in pipeline.gallery.received()
            if c["path"].startswith(f"/api/internal/photos/{photo_id}/")
        ]

    pipeline.wait_for(lambda: len(landed()) >= 1, 120, "the first callback to land")
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    first_rows = {r["model"]: r["updated_at"] for r in pipeline.gallery.ml_results(photo_id)}
    pipeline.gallery.set_fault()
    pipeline.worker("clip")
    labels = {"tiny-hf", "tiny-oc"}

    def by_key() -> dict[str, list[dict[str, Any]]]:
        keys: dict[str, list[dict[str, Any]]] = {}
        for c in landed():
            keys.setdefault(c["key"], []).append(c)
        return keys

    # The redelivered job posts both labels again (the killed worker never marked the photo settled).
    pipeline.wait_for(lambda: sum(len(v) for v in by_key().values()) >= 4, 120, "the redelivery")
    keys = by_key()
    assert len(keys) == len(labels), keys  # one key per label, however often it was delivered
    for calls in keys.values():
        assert calls[0]["status"] == 200 and not calls[0]["replayed"]
        assert all(c["replayed"] for c in calls[1:]), calls  # every later delivery changed nothing
    rows = pipeline.gallery.ml_results(photo_id)
    assert sorted(r["model"] for r in rows) == sorted(labels)  # ... stored once: no duplicate rows
    for model, updated_at in first_rows.items():  # and the stored row was not touched again
        assert next(r["updated_at"] for r in rows if r["model"] == model) == updated_at
    assert pipeline.dead_letters() == []
