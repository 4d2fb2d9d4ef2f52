"""The delivery core in-process: real Redis, RQ's SimpleWorker in burst mode, the real reference gallery
over HTTP, the tiny CLIP models. Each defect of issue 8 that lives in the delivery layer has a test here."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from rq.serializers import JSONSerializer

from shared.dead_letter import DeadLetterQueue
from shared.gallery_client import GalleryClient
from shared.payloads import Capability
from shared.settings import Settings
from tests.fixtures.gallery import GalleryServer, write_jpeg
from workers import runtime
from workers.dispatch import Dispatcher, rq_queue
from workers.photo_decoder import PhotoDecoder
from workers.rq_worker import MindsightWorker
from workers.runtime import PauseControl, WorkerContext
from workers.tasks.clip_task import ClipTask
from workers.tasks.text_task import ClipTextTask

LABELS = {"tiny-hf", "tiny-oc"}


class Harness:
    """One worker context on the test Redis and gallery, and a burst worker to drain the queues."""

    def __init__(self, ctx: WorkerContext, gallery: GalleryServer) -> None:
        self.ctx = ctx
        self.gallery = gallery
        self.redis = ctx.connection

    def enqueue(self, capability: Capability, payloads: list[dict[str, Any]]) -> str:
        with self.redis.pipeline() as pipe:
            job_id = self.ctx.dispatcher.add(pipe, capability, payloads)
            pipe.execute()
        return job_id

    def drain(self, *capabilities: Capability) -> None:
        """Run every queued job (retries included: the test backoff is 0 s) until the queues are empty."""
        queues = [rq_queue(self.redis, c) for c in capabilities or (Capability.CLIP,)]
        worker = MindsightWorker(queues, connection=self.redis, serializer=JSONSerializer, pause=None)
        worker.work(burst=True, logging_level=None)

    def dead_letters(self, key: str = "photo_tasks_dlq") -> list[Any]:
        return [item.letter for item in DeadLetterQueue(self.redis, key).scan()]

    def failure_callbacks(self, photo_id: int) -> list[dict[str, Any]]:
        return [
            r
            for r in self.gallery.received()
            if r["path"].startswith(f"/api/internal/photos/{photo_id}/")
            and r["body"].get("processing_status") == "failed"
        ]

    def photo(self, tmp_path: Path, name: str = "p.jpg") -> dict[str, Any]:
        photo_id, path = self.gallery.add_photo(write_jpeg(tmp_path / name))
        return {"photo_id": photo_id, "user_id": 1, "path": path, "tasks": ["clip"]}

    def delivered(self, photo_id: int) -> bool:
        return {r["model"] for r in self.gallery.ml_results(photo_id) if r["status"] == "done"} >= LABELS


@pytest.fixture
def harness(
    redis_url: str,
    gallery_server: GalleryServer,
    make_settings: Callable[..., Settings],
    tiny_clip_env: dict[str, str],
    tiny_clip_models: dict[str, Any],
) -> Iterator[Harness]:
    settings = make_settings(
        REDIS_URL=redis_url,
        **gallery_server.env(),
        **tiny_clip_env,
        MINDSIGHT_RETRY_BACKOFF_S="0",
        MINDSIGHT_MAX_RETRIES="2",
        MINDSIGHT_GALLERY_RETRIES="0",
    )
    connection = redis.Redis.from_url(redis_url)
    ctx = WorkerContext(
        settings=settings,
        connection=connection,
        gallery=GalleryClient(settings.gallery, retry_base_s=0.01),
        dispatcher=Dispatcher(connection, settings.worker, settings.redis),
        decoder=PhotoDecoder(settings.paths.roots()),
        photo_tasks={Capability.CLIP: ClipTask(tiny_clip_models)},
        text_task=ClipTextTask(tiny_clip_models, "tiny-hf"),
        pause=PauseControl(0.01, first_s=0.0, auth_first_s=0.0),
        name="test-worker",
    )
    runtime.install(ctx)
    try:
        yield Harness(ctx, gallery_server)
    finally:
        ctx.gallery.close()
        connection.close()


@pytest.mark.parametrize("field", ["path", "tasks"])
def test_a_lone_surrogate_in_a_photo_job_is_dead_lettered_once_with_one_failed_callback(
    harness: Harness, tmp_path: Path, field: str
) -> None:
    bad = harness.photo(tmp_path, "bad.jpg")
    bad[field] = "uploads/original/\ud800.jpg" if field == "path" else ["clip", "\ud800"]
    good = harness.photo(tmp_path, "good.jpg")
    harness.enqueue(Capability.CLIP, [bad])
    harness.enqueue(Capability.CLIP, [good])
    harness.drain()
    # The wire contract (shared.payloads) refuses a lone surrogate in any string field, tasks included.
    [letter] = harness.dead_letters()
    assert letter.payload == bad and letter.capability == "clip" and letter.attempts == 1
    assert {c["body"]["model"] for c in harness.failure_callbacks(bad["photo_id"])} == LABELS
    assert len(harness.failure_callbacks(bad["photo_id"])) == len(LABELS)
    assert harness.delivered(good["photo_id"])


@pytest.mark.parametrize("field", ["query", "model"])
def test_a_lone_surrogate_in_a_text_job_is_dead_lettered_once(harness: Harness, field: str) -> None:
    job = {"type": "text_embed", "request_id": 7, "query": "a cat", "model": "tiny-hf"}
    job[field] = "\ud800"
    harness.enqueue(Capability.TEXT, [job])
    harness.enqueue(Capability.TEXT, [{"type": "text_embed", "request_id": 8, "query": "a dog"}])
    harness.drain(Capability.TEXT)
    letters = harness.dead_letters("text_tasks_dlq")
    # The wire contract (shared.payloads) refuses a lone surrogate in any string field.
    assert [lt.payload for lt in letters] == [job] and letters[0].error_type == "BadPayload"
    assert harness.gallery.text_query(8) is not None


@pytest.mark.parametrize(
    "make_path",
    [
        lambda root: ("loop.jpg", lambda p: p.symlink_to(p)),
        lambda root: ("a" * 300 + ".jpg", None),
        lambda root: ("~nosuchuser-4711/x.jpg", None),
        lambda root: ("fifo.jpg", lambda p: __import__("os").mkfifo(p)),
        lambda root: ("dir.jpg", lambda p: p.mkdir()),
    ],
    ids=["symlink-loop", "enametoolong", "unknown-user", "fifo", "directory"],
)
def test_impossible_paths_are_dead_lettered_on_the_first_attempt(
    harness: Harness, tmp_path: Path, make_path: Any
) -> None:
    name, create = make_path(tmp_path)
    uploads = tmp_path / "uploads" / "original"
    uploads.mkdir(parents=True, exist_ok=True)
    if create is not None:
        create(uploads / name)
    job = harness.photo(tmp_path, "good.jpg")
    job["path"] = name if name.startswith("~") else f"./uploads/original/{name}"
    harness.enqueue(Capability.CLIP, [job])
    harness.drain()
    [letter] = harness.dead_letters()
    assert letter.attempts == 1, letter
    assert letter.error_type in {"ImageDecodeError", "UnsafePath", "BadPayload"}


def test_a_failed_batch_is_split_into_only_the_photos_not_yet_settled(
    harness: Harness, tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    """[delivered, dead-lettered, hangs -> job timeout, never tried]: the split re-runs the last two only."""
    first, hangs, last = (harness.photo(tmp_path, f"{n}.jpg") for n in ("first", "hangs", "last"))
    bad = {**harness.photo(tmp_path, "bad.jpg"), "path": "./uploads/original/missing.jpg"}
    harness.ctx.dispatcher.timeout_s = 2
    harness.gallery.set_fault(delay_s=4, count=1, only=f"/photos/{hangs['photo_id']}/")
    harness.enqueue(Capability.CLIP, [first, bad, hangs, last])
    harness.drain()

    [letter] = harness.dead_letters()
    assert letter.payload == bad and letter.error_type == "ImageDecodeError"
    assert len(harness.failure_callbacks(bad["photo_id"])) == len(LABELS)
    for photo in (first, hangs, last):
        assert harness.delivered(photo["photo_id"])
    posts = [r["path"] for r in harness.gallery.received() if r["status"] == 200]
    assert posts.count(f"/api/internal/photos/{first['photo_id']}/ml_result") == len(LABELS)
