"""Fault injection through the real pipeline: after each fault, every job is delivered or dead-lettered
with its reason, never lost and never drained into the dead-letter queue by an outage."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from PIL import Image
from rq.worker import Worker

from shared.embedded_redis import EmbeddedRedis
from tests.fixtures.gallery import GalleryServer
from tests.fixtures.pipeline import FAST_DELIVERY, Pipeline

pytestmark = pytest.mark.slow
LABELS = {"tiny-hf", "tiny-oc"}


def jpeg(path: Path, color: tuple[int, int, int] = (180, 60, 30), size: tuple[int, int] = (320, 240)) -> Path:
    Image.new("RGB", size, color).save(path, quality=85)
    return path


def add(pipeline: Pipeline, tmp_path: Path, n: int) -> list[tuple[int, str]]:
    return [
        pipeline.gallery.add_photo(jpeg(tmp_path / f"p{i}.jpg", (20 * i % 255, 90, 160))) for i in range(n)
    ]


def done(gallery: GalleryServer, photo_id: int) -> bool:
    return {r["model"] for r in gallery.ml_results(photo_id) if r["status"] == "done"} >= LABELS


def test_bad_inputs_are_dead_lettered_with_reasons_and_the_rest_delivered(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    g = pipeline.gallery
    good_id, good_path = g.add_photo(jpeg(tmp_path / "good.jpg"))
    truncated = tmp_path / "trunc.jpg"
    truncated.write_bytes(jpeg(tmp_path / "full.jpg", size=(640, 480)).read_bytes()[:600])
    trunc_id, trunc_path = g.add_photo(truncated)
    notimg = tmp_path / "notes.jpg"
    notimg.write_text("this is not an image")
    notimg_id, notimg_path = g.add_photo(notimg)
    outside_id, _ = g.add_photo(jpeg(tmp_path / "o.jpg"))
    (tmp_path.parent / "secret.jpg").write_bytes(b"x")

    pipeline.push_photo(good_id, good_path)
    pipeline.push_photo(trunc_id, trunc_path)
    pipeline.push_photo(notimg_id, notimg_path)
    pipeline.push_photo(outside_id, "../../secret.jpg")
    pipeline.push_photo(outside_id + 1000, "./uploads/original/missing.jpg")
    pipeline.redis.lpush("photo_tasks", '{"photo_id": 1, "tasks": ["clip"]}')
    pipeline.router()
    pipeline.worker("clip")
    pipeline.wait_for(
        lambda: done(g, good_id) and len(pipeline.dead_letters()) == 5, 90, "delivery + 5 dead letters"
    )

    letters = {(d["payload"] or {}).get("photo_id"): d for d in pipeline.dead_letters()}
    assert letters[trunc_id]["error_type"] == "ImageDecodeError" and letters[trunc_id]["capability"] == "clip"
    assert letters[notimg_id]["error_type"] == "ImageDecodeError"
    assert letters[outside_id]["error_type"] == "UnsafePath"
    assert letters[outside_id + 1000]["error_type"] == "ImageDecodeError"
    assert "not found" in letters[outside_id + 1000]["error"]
    assert letters[None]["error_type"] == "BadPayload" and letters[None]["raw"]
    for letter in letters.values():
        assert letter["attempts"] >= 1 and letter["failed_at"] > 0 and letter["worker"]
    # The gallery was told, so it does not wait forever.
    failed = {r["model"]: r for r in g.ml_results(trunc_id)}
    assert {m for m, r in failed.items() if r["status"] == "failed"} == LABELS
    assert "ImageDecodeError" in failed["tiny-hf"]["error"]


def test_gallery_500s_are_waited_out(pipeline: Pipeline, tmp_path: Path) -> None:
    photos = add(pipeline, tmp_path, 3)
    pipeline.gallery.set_fault(500, count=8)
    for pid, path in photos:
        pipeline.push_photo(pid, path)
    pipeline.router()
    pipeline.worker("clip")
    pipeline.wait_for(
        lambda: all(done(pipeline.gallery, pid) for pid, _ in photos), 120, "delivery after 500s"
    )
    assert pipeline.dead_letters() == []
    assert any(r["status"] == 500 for r in pipeline.gallery.received())


def test_gallery_down_for_a_while_keeps_every_job(pipeline: Pipeline, tmp_path: Path) -> None:
    photos = add(pipeline, tmp_path, 2)
    pipeline.gallery.set_fault(503)  # until cleared
    for pid, path in photos:
        pipeline.push_photo(pid, path)
    pipeline.router()
    pipeline.worker("clip")
    pipeline.wait_for(lambda: sum(r["status"] == 503 for r in pipeline.gallery.received()) >= 4, 90, "503s")
    time.sleep(3)
    assert pipeline.dead_letters() == []
    assert not any(done(pipeline.gallery, pid) for pid, _ in photos)
    pipeline.gallery.set_fault()
    pipeline.wait_for(
        lambda: all(done(pipeline.gallery, pid) for pid, _ in photos), 60, "delivery after outage"
    )
    assert pipeline.dead_letters() == []


def test_wrong_token_pauses_and_keeps_the_jobs(pipeline: Pipeline, tmp_path: Path) -> None:
    [(pid, path)] = add(pipeline, tmp_path, 1)
    pipeline.push_photo(pid, path)
    pipeline.router()
    wrong = pipeline.worker("clip", PROCESSING_INTERNAL_TOKEN="a-wrong-but-real-looking-token")
    pipeline.wait_for(lambda: any(r["status"] == 401 for r in pipeline.gallery.received()), 60, "a 401")
    time.sleep(2)
    assert pipeline.dead_letters() == []
    assert not done(pipeline.gallery, pid)
    wrong.send_signal(signal.SIGTERM)
    wrong.wait(timeout=30)
    assert "GALLERY REJECTED OUR TOKEN" in pipeline.logs()
    pipeline.worker("clip")
    pipeline.wait_for(lambda: done(pipeline.gallery, pid), 90, "delivery with the right token")
    assert pipeline.dead_letters() == []


def test_worker_killed_mid_batch_is_recovered_quickly(pipeline: Pipeline, tmp_path: Path) -> None:
    photos = add(pipeline, tmp_path, 3)
    for pid, path in photos:
        pipeline.push_photo(pid, path)
    pipeline.gallery.set_fault(delay_s=60, count=1, status=None)  # the first callback hangs
    pipeline.router()
    # The victim waits out the hanging callback (no client timeout before it), so it is mid-batch when
    # killed however long the spare takes to start.
    victim = pipeline.worker("clip", MINDSIGHT_GALLERY_TIMEOUT_S="120")
    pipeline.wait_for(lambda: pipeline.redis.zcard("rq:wip:clip") > 0, 90, "the batch to start")
    # The replacement is up (models loaded, registered, idle) before the kill, so what is timed below is
    # the recovery itself, not a process start.
    pipeline.worker("clip")
    pipeline.wait_for(lambda: len(Worker.all(connection=pipeline.redis)) == 2, 90, "the spare worker")
    assert pipeline.redis.zcard("rq:wip:clip") > 0, "the victim must still be mid-batch"
    assert not all(done(pipeline.gallery, pid) for pid, _ in photos)
    victim.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    pipeline.gallery.set_fault()
    pipeline.wait_for(lambda: all(done(pipeline.gallery, pid) for pid, _ in photos), 120, "recovery")
    recovered_in = time.monotonic() - killed_at
    # The documented bound: the lease (MINDSIGHT_ABANDONED_AFTER_S) runs out, the next clean-up (every
    # heartbeat/2, at least 1 s) hands the batch to the failure policy, the split jobs wait one retry
    # backoff, then inference and callbacks. Ten seconds of slack for a loaded CI machine; the wait above
    # allows 120 s, so this can fail.
    bound = (
        int(FAST_DELIVERY["MINDSIGHT_ABANDONED_AFTER_S"])
        + max(1, int(FAST_DELIVERY["MINDSIGHT_HEARTBEAT_S"]) // 2)
        + int(FAST_DELIVERY["MINDSIGHT_RETRY_BACKOFF_S"])
        + 10
    )
    assert recovered_in < bound, (recovered_in, bound)
    assert pipeline.dead_letters() == []


def test_job_timeout_is_retried_then_delivered(pipeline: Pipeline, tmp_path: Path) -> None:
    [(pid, path)] = add(pipeline, tmp_path, 1)
    pipeline.gallery.set_fault(delay_s=6, count=1, status=None)
    pipeline.push_photo(pid, path)
    pipeline.router()
    pipeline.worker("clip", MINDSIGHT_JOB_TIMEOUT_S="3")
    pipeline.wait_for(lambda: done(pipeline.gallery, pid), 90, "delivery after a timeout")
    assert pipeline.dead_letters() == []
    assert "JobTimeoutException" in pipeline.logs(), pipeline.logs()


def test_exhausted_retries_end_in_the_dead_letter_queue(pipeline: Pipeline, tmp_path: Path) -> None:
    [(pid, path)] = add(pipeline, tmp_path, 1)
    pipeline.gallery.set_fault(delay_s=4, status=None)  # every callback is too slow for the job timeout
    pipeline.push_photo(pid, path)
    pipeline.router(
        MINDSIGHT_MAX_RETRIES="1"
    )  # the retry policy travels with the job, set where it is queued
    pipeline.worker("clip", MINDSIGHT_JOB_TIMEOUT_S="2")
    pipeline.wait_for(lambda: len(pipeline.dead_letters()) == 1, 90, "a dead letter")
    [letter] = pipeline.dead_letters()
    assert letter["error_type"] == "JobTimeoutException"
    assert letter["attempts"] == 2 and letter["capability"] == "clip" and letter["payload"]["photo_id"] == pid


def test_redis_restart_mid_run_loses_nothing(
    private_redis: EmbeddedRedis, gallery_server: GalleryServer, tiny_clip_env: dict[str, str], tmp_path: Path
) -> None:
    workdir = tmp_path / "run"
    workdir.mkdir()
    p = Pipeline(private_redis.url, gallery_server, tiny_clip_env, workdir)
    try:
        photos = [
            gallery_server.add_photo(jpeg(tmp_path / f"r{i}.jpg", (i * 30 % 255, 10, 90))) for i in range(6)
        ]
        for pid, path in photos[:3]:
            p.push_photo(pid, path)
        p.router()
        p.worker("clip")
        p.wait_for(lambda: done(gallery_server, photos[0][0]), 90, "first delivery")
        private_redis.restart()
        for pid, path in photos[3:]:
            p.push_photo(pid, path)
        p.wait_for(lambda: all(done(gallery_server, pid) for pid, _ in photos), 120, "delivery after restart")
        assert p.dead_letters() == []
    finally:
        p.stop_all()


def test_redis_down_while_a_job_runs_is_ridden_out(
    private_redis: EmbeddedRedis, gallery_server: GalleryServer, tiny_clip_env: dict[str, str], tmp_path: Path
) -> None:
    """Issue 8, defect 4: Redis gone for ~6 s mid-job made the worker rebuild itself, and the rebuild's
    CLIENT SETNAME (outside any retry) ended the process. Router and worker must outlast any outage."""
    workdir = tmp_path / "run"
    workdir.mkdir()
    p = Pipeline(private_redis.url, gallery_server, tiny_clip_env, workdir)
    try:
        photos = [gallery_server.add_photo(jpeg(tmp_path / f"b{i}.jpg", (i * 40, 20, 90))) for i in range(2)]
        gallery_server.set_fault(delay_s=4, count=1, status=None)  # the first callback is slow
        p.push_photo(*photos[0])
        router, worker = p.router(), p.worker("clip")
        p.wait_for(lambda: p.redis.zcard("rq:wip:clip") > 0, 90, "the job to start")
        private_redis.stop()
        time.sleep(6)  # the outage: the job's callback ends and the worker loses Redis meanwhile
        assert router.poll() is None and worker.poll() is None, p.logs()
        private_redis.start()
        p.push_photo(*photos[1])
        p.wait_for(lambda: all(done(gallery_server, pid) for pid, _ in photos), 120, "delivery after outage")
        assert router.poll() is None and worker.poll() is None, p.logs()
        assert p.dead_letters() == []
    finally:
        p.stop_all()
