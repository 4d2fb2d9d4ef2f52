"""`mindsight backfill` against a real Redis, the reference gallery over HTTP and real router and worker
processes: bounded, resumable after SIGKILL, and `--model` computes only that label."""

from __future__ import annotations

import signal
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from rq.job import Job
from rq.serializers import JSONSerializer

from services.backfill import Backfill, BackfillPlan, parse_rate
from shared.dead_letter import DeadLetterQueue
from shared.gallery_client import GalleryClient
from shared.lanes import Lane
from shared.payloads import Capability
from shared.queues import backfill_checkpoint
from shared.settings import Settings
from tests.fixtures.gallery import GalleryServer, write_jpeg
from tests.fixtures.pipeline import Pipeline
from workers import runtime
from workers.dispatch import Dispatcher, rq_queue
from workers.photo_decoder import PhotoDecoder
from workers.rq_worker import MindsightWorker
from workers.runtime import PauseControl, WorkerContext
from workers.tasks.clip_task import ClipTask

LABELS = {"tiny-hf", "tiny-oc"}


def library(gallery: GalleryServer, tmp_path: Path, n: int) -> list[int]:
    src = tmp_path / "src"
    return [gallery.add_photo(write_jpeg(src / f"{i:04d}.jpg", (i % 250, 80, 120)))[0] for i in range(n)]


def listed(ids: list[int]) -> list[dict[str, Any]]:
    return [{"id": i, "user_id": 1, "path": f"./uploads/original/{i}.jpg"} for i in ids]


def test_rate_parsing() -> None:
    assert parse_rate("") == 0 and parse_rate("20/s") == 20 and parse_rate("2.5") == 2.5
    with pytest.raises(ValueError, match="--rate"):
        parse_rate("fast")


def test_a_checkpoint_resumes_its_run_and_a_finished_one_starts_a_new_run(redis_url: str) -> None:
    conn = redis.Redis.from_url(redis_url)
    plan = BackfillPlan(tasks=["clip"], models=["tiny-oc"], since_id=2)
    job = Backfill(conn, "photo_tasks_bulk", plan)
    photos = [*listed([5, 3, 9, 4]), {"id": "7", "user_id": 1, "path": "x"}, {"id": 8}]  # two unusable
    todo, progress = job.todo(photos)
    assert [p["id"] for p in todo] == [3, 4, 5, 9] and not progress.resumed  # ascending, after --since-id
    conn.hset(backfill_checkpoint(plan.name), mapping={"run": "r1", "last_id": 4, "pushed": 2, "done": "0"})
    todo, progress = job.todo(photos)
    assert [p["id"] for p in todo] == [5, 9] and progress.resumed and progress.run == "r1"
    assert (progress.pushed, progress.total) == (2, 4)
    conn.hset(backfill_checkpoint(plan.name), "done", "1")
    todo, progress = job.todo(photos)
    assert [p["id"] for p in todo] == [3, 4, 5, 9] and progress.run != "r1"
    other = Backfill(conn, "photo_tasks_bulk", BackfillPlan(tasks=["clip"]))  # its own checkpoint
    assert [p["id"] for p in other.todo(photos)[0]] == [3, 4, 5, 9]


def in_bulk_lane(conn: redis.Redis) -> int:
    """Photos waiting in the bulk lane, counted independently of services.backfill."""
    q = rq_queue(conn, Capability.CLIP, Lane.BULK)
    held = 0
    for jid in q.get_job_ids() + q.started_job_registry.get_job_ids():
        try:
            held += len(Job.fetch(jid, connection=conn, serializer=JSONSerializer).args[0]["payloads"])
        except Exception:  # finished between listing and fetching
            continue
    return int(conn.llen("photo_tasks_bulk")) + held


def delivered(gallery: GalleryServer, ids: list[int], labels: set[str] = LABELS) -> bool:
    return all({r["model"] for r in gallery.ml_results(i) if r["status"] == "done"} >= labels for i in ids)


def callbacks_per_photo_and_label(gallery: GalleryServer) -> Counter[tuple[int, str]]:
    """Results the gallery applied, per (photo, label): a redelivery it answered from its idempotency
    store (a job re-run after a missed lease on a loaded machine: the in-flight batch) changed nothing."""
    return Counter(
        (int(c["path"].split("/")[4]), c["body"]["model"])
        for c in gallery.received()
        if c["path"].endswith("/ml_result") and c["status"] == 200 and not c["replayed"]
    )


@pytest.mark.slow
def test_a_backfill_killed_half_way_resumes_and_delivers_every_photo_once_within_the_bound(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    ids = library(pipeline.gallery, tmp_path, 300)
    bound, batch = 40, 8
    pipeline.base_env["MINDSIGHT_BULK_BATCH_SIZE"] = str(batch)
    pipeline.router()
    pipeline.worker("clip")
    args = ("backfill", "--tasks", "clip", "--max-outstanding", str(bound))
    first = pipeline.start(*args)
    key = backfill_checkpoint(BackfillPlan(tasks=["clip"]).name)
    seen = [0]

    def pushed_at_least(n: int) -> Callable[[], bool]:
        def check() -> bool:
            seen.append(in_bulk_lane(pipeline.redis))
            return int(pipeline.redis.hget(key, "pushed") or 0) >= n

        return check

    pipeline.wait_for(pushed_at_least(150), 300, "half the library enqueued")
    run = pipeline.redis.hget(key, "run")
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert int(pipeline.redis.hget(key, "pushed") or 0) < len(ids)  # really killed half-way
    second = pipeline.start(*args)

    def finished() -> bool:
        seen.append(in_bulk_lane(pipeline.redis))
        return second.poll() == 0

    pipeline.wait_for(finished, 600, "the resumed backfill to finish")
    assert pipeline.redis.hget(key, "run") == run and pipeline.redis.hget(key, "done") == b"1"
    assert "resuming run" in pipeline.logs()
    pipeline.wait_for(lambda: delivered(pipeline.gallery, ids), 120, "every photo delivered")
    counts = callbacks_per_photo_and_label(pipeline.gallery)
    assert set(counts) == {(i, label) for i in ids for label in LABELS}
    assert max(counts.values()) == 1, [k for k, v in counts.items() if v > 1]  # none twice
    # The bound holds. Slack: the backfill cannot see the batch a router holds between list and RQ (one
    # batch), and a sample can count a batch twice (list then RQ, queue then started: one batch each).
    assert 0 < max(seen) <= bound + 3 * batch, max(seen)
    assert pipeline.dead_letters() == []


@pytest.mark.slow
def test_model_restricts_the_labels_and_dry_run_writes_nothing(pipeline: Pipeline, tmp_path: Path) -> None:
    ids = library(pipeline.gallery, tmp_path, 12)
    args = ("backfill", "--tasks", "clip", "--model", "tiny-oc", "--limit", "8")
    dry = pipeline.start(*args, "--dry-run")
    assert dry.wait(timeout=120) == 0
    assert "8 to enqueue" in pipeline.logs()
    assert pipeline.redis.keys("mindsight:backfill:*") == [] and pipeline.redis.llen("photo_tasks_bulk") == 0
    pipeline.router()
    pipeline.worker("clip")
    run = pipeline.start(*args)
    pipeline.wait_for(lambda: run.poll() == 0, 300, "the backfill to finish")
    pipeline.wait_for(lambda: delivered(pipeline.gallery, ids[:8], {"tiny-oc"}), 60, "delivery")
    counts = callbacks_per_photo_and_label(pipeline.gallery)
    assert set(counts) == {(i, "tiny-oc") for i in ids[:8]}  # only that label, only the first 8 photos


def test_a_models_label_not_configured_is_dead_lettered_with_failed_callbacks_for_that_label(
    redis_url: str,
    gallery_server: GalleryServer,
    make_settings: Callable[..., Settings],
    tiny_clip_env: dict[str, str],
    tiny_clip_models: dict[str, Any],
    tmp_path: Path,
) -> None:
    settings = make_settings(REDIS_URL=redis_url, **gallery_server.env(), **tiny_clip_env)
    conn = redis.Redis.from_url(redis_url)
    dispatcher = Dispatcher(conn, settings.worker, settings.redis)
    runtime.install(
        WorkerContext(
            settings=settings,
            connection=conn,
            gallery=GalleryClient(settings.gallery),
            dispatcher=dispatcher,
            decoder=PhotoDecoder(settings.paths.roots()),
            photo_tasks={Capability.CLIP: ClipTask(tiny_clip_models)},
            text_task=None,
            pause=PauseControl(0.01, first_s=0.0, auth_first_s=0.0),
            name="models-worker",
        )
    )
    bad, good = (gallery_server.add_photo(write_jpeg(tmp_path / f"{n}.jpg")) for n in ("bad", "good"))
    jobs = [
        {"photo_id": bad[0], "user_id": 1, "path": bad[1], "tasks": ["clip"], "models": ["nope"]},
        {"photo_id": good[0], "user_id": 1, "path": good[1], "tasks": ["clip"], "models": ["tiny-hf"]},
    ]
    with conn.pipeline() as pipe:
        dispatcher.add(pipe, Capability.CLIP, jobs)  # one batch: the bad job must not sink the good one
        pipe.execute()
    MindsightWorker([rq_queue(conn, Capability.CLIP)], connection=conn, serializer=JSONSerializer).work(
        burst=True, logging_level=None
    )
    [letter] = DeadLetterQueue(conn, "photo_tasks_dlq").scan()
    assert letter.letter.error_type == "UnknownModel" and "tiny-hf" in letter.letter.error
    assert [(r["model"], r["status"]) for r in gallery_server.ml_results(bad[0])] == [("nope", "failed")]
    assert [(r["model"], r["status"]) for r in gallery_server.ml_results(good[0])] == [("tiny-hf", "done")]
