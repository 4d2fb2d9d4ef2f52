"""Priority lanes on a real Redis: the router keeps bulk work apart, workers take interactive work first,
and a payload that knows nothing of lanes is routed exactly as before."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from rq.job import Job
from rq.serializers import JSONSerializer

from mindsight.cli.status_cmd import collect
from shared.gallery_client import GalleryClient
from shared.lanes import Lane, lane_of
from shared.payloads import Capability, parse_photo_job
from shared.settings import Settings
from tests.fixtures.gallery import GalleryServer, write_jpeg
from workers import runtime
from workers.delivery.envelope import JobEnvelope, JobPolicy
from workers.dispatch import Dispatcher, lane_queues, rq_queue
from workers.photo_decoder import PhotoDecoder
from workers.router import Router
from workers.rq_worker import MindsightWorker
from workers.runtime import PauseControl, WorkerContext
from workers.tasks.clip_task import ClipTask


def photo(pid: int, **extra: Any) -> dict[str, Any]:
    return {
        "photo_id": pid,
        "user_id": 1,
        "path": f"./uploads/original/{pid}.jpg",
        "tasks": ["clip"],
        **extra,
    }


def jobs(conn: redis.Redis, cap: Capability, lane: Lane) -> list[JobEnvelope]:
    q = rq_queue(conn, cap, lane)
    fetched = [Job.fetch(jid, connection=conn, serializer=JSONSerializer) for jid in q.get_job_ids()]
    return [JobEnvelope.from_wire(j.args[0]) for j in fetched]


def ids(envelopes: list[JobEnvelope]) -> list[int]:
    return [p["photo_id"] for e in envelopes for p in e.payloads]


@pytest.fixture
def router(make_settings: Callable[..., Settings], redis_url: str) -> Iterator[Router]:
    settings = make_settings(
        REDIS_URL=redis_url, CAPTION_ENABLED="0", MINDSIGHT_BATCH_SIZE="4", MINDSIGHT_BULK_BATCH_SIZE="16"
    )
    conn = redis.Redis.from_url(redis_url)
    yield Router(conn, settings)
    conn.close()


def test_an_old_payload_goes_to_the_interactive_queue_byte_for_byte(router: Router) -> None:
    conn = router.connection
    raw = '{"photo_id": 1, "user_id": 1, "path": "./uploads/original/1.jpg", "tasks": ["thumbnail", "clip"]}'
    conn.lpush("photo_tasks", raw)
    router.consume_once("photo_tasks", block_s=0.1)
    [job] = jobs(conn, Capability.CLIP, Lane.INTERACTIVE)
    assert job.payloads == [json.loads(raw)] and job.policy.lane is Lane.INTERACTIVE
    assert rq_queue(conn, Capability.CLIP).name == "clip"  # the queue name from before lanes
    assert jobs(conn, Capability.CLIP, Lane.BULK) == []


def test_bulk_by_field_or_by_list_goes_to_the_bulk_queue_in_bulk_batches(router: Router) -> None:
    conn = router.connection
    conn.lpush("photo_tasks", json.dumps(photo(1, priority="bulk")), json.dumps(photo(2, priority="BULK")))
    conn.lpush(
        "photo_tasks", json.dumps(photo(3, priority="interactive")), json.dumps(photo(4, priority="x"))
    )
    conn.lpush("photo_tasks_bulk", *[json.dumps(photo(100 + i)) for i in range(40)])
    while router.consume_once("photo_tasks", block_s=0.1):
        pass
    while router.consume_once("photo_tasks_bulk", block_s=0.1):
        pass
    interactive = jobs(conn, Capability.CLIP, Lane.INTERACTIVE)
    bulk = jobs(conn, Capability.CLIP, Lane.BULK)
    assert sorted(ids(interactive)) == [3, 4]
    assert sorted(ids(bulk)) == [1, 2, *range(100, 140)]
    from_list = [e for e in bulk if e.payloads[0]["photo_id"] >= 100]
    assert [len(e.payloads) for e in from_list] == [16, 16, 8]  # MINDSIGHT_BULK_BATCH_SIZE, not 4
    assert all(e.policy.lane is Lane.BULK for e in bulk)
    data = collect(conn, router.settings)
    lanes = {(q["capability"], q["lane"]): q["queued"] for q in data["queues"]}
    assert lanes[("clip", "bulk")] == len(bulk) and lanes[("clip", "interactive")] == len(interactive)
    assert ("text", "bulk") not in lanes
    assert "photo_tasks_bulk" in data["backend_lists"]


def test_the_lane_survives_the_wire_and_old_envelopes_are_interactive() -> None:
    policy = JobPolicy("dlq", "photo_tasks", 3, [5], Lane.BULK)
    assert JobPolicy.from_wire(policy.to_wire()) == policy
    old = {k: v for k, v in policy.to_wire().items() if k != "lane"}
    assert JobPolicy.from_wire(old).lane is Lane.INTERACTIVE


def test_workers_take_interactive_work_first_and_bulk_when_it_is_idle(
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
    ctx = WorkerContext(
        settings=settings,
        connection=conn,
        gallery=GalleryClient(settings.gallery),
        dispatcher=dispatcher,
        decoder=PhotoDecoder(settings.paths.roots()),
        photo_tasks={Capability.CLIP: ClipTask(tiny_clip_models)},
        text_task=None,
        pause=PauseControl(0.01, first_s=0.0, auth_first_s=0.0),
        name="lanes-worker",
    )
    runtime.install(ctx)
    photos = []
    for i in range(6):
        pid, path = gallery_server.add_photo(write_jpeg(tmp_path / f"{i}.jpg"))
        photos.append({"photo_id": pid, "user_id": 1, "path": path, "tasks": ["clip"]})
    bulk, interactive = photos[:4], photos[4:]
    with conn.pipeline() as pipe:  # the bulk burst is queued first, the fresh uploads after it
        for p in bulk:
            dispatcher.add(
                pipe, Capability.CLIP, [p], policy=dispatcher.policy_for(Capability.CLIP, Lane.BULK)
            )
        for p in interactive:
            dispatcher.add(pipe, Capability.CLIP, [p])
        pipe.execute()
    queues = lane_queues(conn, [Capability.CLIP])
    assert [q.name for q in queues] == ["clip", "clip_bulk"]
    MindsightWorker(queues, connection=conn, serializer=JSONSerializer).work(burst=True, logging_level=None)
    order: list[int] = []
    for c in gallery_server.received():
        pid = int(c["path"].split("/")[4])
        if pid not in order:
            order.append(pid)
    assert order == [p["photo_id"] for p in interactive + bulk]  # every bulk photo too: no starvation
    ctx.gallery.close()
    conn.close()


def test_a_worker_for_several_capabilities_takes_every_interactive_lane_before_any_bulk_lane(
    redis_url: str,
) -> None:
    conn = redis.Redis.from_url(redis_url)
    names = [q.name for q in lane_queues(conn, [Capability.CLIP, Capability.FACE, Capability.TEXT])]
    assert names == ["text", "clip", "face", "clip_bulk", "face_bulk"]


def test_a_photo_worker_takes_captions_last_whatever_order_it_was_given(redis_url: str) -> None:
    conn = redis.Redis.from_url(redis_url)
    caps = [Capability.CAPTION, Capability.FACE, Capability.CLIP, Capability.CAPTION]
    names = [q.name for q in lane_queues(conn, caps)]
    assert names == ["clip", "face", "caption", "clip_bulk", "face_bulk", "caption_bulk"]


@pytest.mark.parametrize("priority", [3, None, ["bulk"], "\ud800", {"a": 1}])
def test_a_priority_field_of_another_shape_reads_as_absent(priority: object) -> None:
    job = parse_photo_job(json.dumps(photo(1, priority=priority, models="not-a-list")))
    assert job.priority is None and job.models is None
    assert lane_of(job, from_bulk_list=False) is Lane.INTERACTIVE


def test_jobs_ls_and_rm_see_the_bulk_lane(
    redis_client: redis.Redis, make_settings: Callable[..., Settings], redis_url: str
) -> None:
    from click.testing import CliRunner

    from mindsight.cli.main import cli

    settings = make_settings(REDIS_URL=redis_url)
    dispatcher = Dispatcher(redis_client, settings.worker, settings.redis)
    with redis_client.pipeline() as pipe:
        bulk = dispatcher.add(
            pipe, Capability.CLIP, [photo(1)], policy=dispatcher.policy_for(Capability.CLIP, Lane.BULK)
        )
        pipe.execute()
    runner = CliRunner()
    listed = runner.invoke(cli, ["--env-file", "/dev/null", "jobs", "ls", "--json"])
    assert listed.exit_code == 0, listed.output
    [row] = [json.loads(line) for line in listed.output.splitlines()]
    assert (row["id"], row["queue"], row["place"]) == (bulk, "clip_bulk", "queued")
    removed = runner.invoke(cli, ["--env-file", "/dev/null", "jobs", "rm", bulk, "--yes"])
    assert removed.exit_code == 0 and "1 payload(s) dead-lettered" in removed.output, removed.output
    assert rq_queue(redis_client, Capability.CLIP, Lane.BULK).get_job_ids() == []


def test_dead_letters_of_bulk_work_are_requeued_on_the_bulk_lane(
    redis_client: redis.Redis, make_settings: Callable[..., Settings], redis_url: str
) -> None:
    from shared.dead_letter import DeadLetter, DeadLetterQueue
    from workers.requeue import requeue

    settings = make_settings(REDIS_URL=redis_url)
    dispatcher = Dispatcher(redis_client, settings.worker, settings.redis)
    dlq = DeadLetterQueue(redis_client, "photo_tasks_dlq")
    letters = {
        1: "photo_tasks_bulk",  # came from the bulk list
        2: "photo_tasks",  # interactive
        3: "photo_tasks",  # "priority": "bulk" on the interactive list
    }
    for pid, source in letters.items():
        payload = photo(pid, priority="bulk") if pid == 3 else photo(pid)
        letter = DeadLetter.from_exception(
            RuntimeError("boom"),
            capability="clip",
            payload=payload,
            attempts=1,
            worker="w",
            source_queue=source,
        )
        dlq.push(letter)
    report = requeue(redis_client, dispatcher, dlq, list(dlq.scan()), "photo_tasks")
    assert len(report.requeued) == 3
    bulk = jobs(redis_client, Capability.CLIP, Lane.BULK)
    assert sorted(ids(bulk)) == [1, 3] and all(e.policy.source_queue == "photo_tasks_bulk" for e in bulk)
    assert ids(jobs(redis_client, Capability.CLIP, Lane.INTERACTIVE)) == [2]
