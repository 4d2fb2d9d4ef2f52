"""The router against a real Redis: reliable hand-off, batching, bad input, dead consumers."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable

import redis
from rq.job import Job
from rq.serializers import JSONSerializer

from shared.dead_letter import DeadLetterQueue
from shared.payloads import Capability
from shared.queues import CONSUMERS_SET, processing_list
from shared.settings import Settings
from workers.delivery.envelope import JobEnvelope
from workers.dispatch import rq_queue
from workers.router import Router


def photo(pid: int, tasks: list[str] | None = None) -> str:
    return json.dumps(
        {
            "photo_id": pid,
            "user_id": 1,
            "path": f"./uploads/original/{pid}.jpg",
            "tasks": tasks or ["thumbnail", "clip", "face"],
        }
    )


def queued(conn: redis.Redis, cap: Capability) -> list[Job]:
    q = rq_queue(conn, cap)
    return [Job.fetch(jid, connection=conn, serializer=JSONSerializer) for jid in q.get_job_ids()]


def payload_ids(jobs: list[Job]) -> list[int]:
    return [p.get("photo_id", p.get("request_id")) for j in jobs for p in envelope(j).payloads]


def envelope(job: Job) -> JobEnvelope:
    return JobEnvelope.from_wire(job.args[0])


def make_router(
    make_settings: Callable[..., Settings], redis_url: str, **env: object
) -> tuple[Router, redis.Redis]:
    settings = make_settings(REDIS_URL=redis_url, **env)
    conn = redis.Redis.from_url(redis_url)
    return Router(conn, settings), conn


def test_photo_job_fans_out_per_capability(make_settings, redis_url) -> None:
    router, conn = make_router(make_settings, redis_url)
    conn.lpush("photo_tasks", photo(1))
    assert router.consume_once("photo_tasks", block_s=0.1) == 1
    for cap in (Capability.CLIP, Capability.CAPTION, Capability.FACE):
        jobs = queued(conn, cap)
        assert payload_ids(jobs) == [1], cap
        assert envelope(jobs[0]).capability is cap
        assert envelope(jobs[0]).policy.dlq_key == "photo_tasks_dlq"
    assert queued(conn, Capability.TEXT) == []
    assert conn.llen(processing_list("photo_tasks", router.consumer_id)) == 0
    assert conn.llen("photo_tasks") == 0


def test_caption_follows_caption_enabled(make_settings, redis_url) -> None:
    router, conn = make_router(make_settings, redis_url, CAPTION_ENABLED="0")
    conn.lpush("photo_tasks", photo(1, ["clip"]))
    router.consume_once("photo_tasks", block_s=0.1)
    assert payload_ids(queued(conn, Capability.CLIP)) == [1]
    assert queued(conn, Capability.CAPTION) == []


def test_backlog_is_batched_in_fifo_order(make_settings, redis_url) -> None:
    router, conn = make_router(make_settings, redis_url, MINDSIGHT_BATCH_SIZE="8")
    for pid in range(1, 21):
        conn.lpush("photo_tasks", photo(pid, ["clip"]))
    taken = [router.consume_once("photo_tasks", block_s=0.1) for _ in range(3)]
    assert taken == [8, 8, 4]
    jobs = queued(conn, Capability.CLIP)
    assert [len(envelope(j).payloads) for j in jobs] == [8, 8, 4]
    assert payload_ids(jobs) == list(range(1, 21))
    # Multi-photo batches carry no RQ retry: a failed batch is split instead (workers.failure).
    assert jobs[0].retries_left is None


def test_single_photo_job_has_retries(make_settings, redis_url) -> None:
    router, conn = make_router(make_settings, redis_url, MINDSIGHT_MAX_RETRIES="2")
    conn.lpush("photo_tasks", photo(5, ["clip"]))
    router.consume_once("photo_tasks", block_s=0.1)
    assert queued(conn, Capability.CLIP)[0].retries_left == 2


def test_lone_photo_is_not_held_back_when_workers_are_idle(make_settings, redis_url) -> None:
    router, conn = make_router(make_settings, redis_url, MINDSIGHT_BATCH_WAIT_MS="2000")
    conn.lpush("photo_tasks", photo(1, ["clip"]))
    start = time.monotonic()
    router.consume_once("photo_tasks", block_s=0.1)
    assert time.monotonic() - start < 1.0


def test_malformed_payloads_are_dead_lettered_raw_with_reason(make_settings, redis_url) -> None:
    router, conn = make_router(make_settings, redis_url, MINDSIGHT_MAX_PAYLOAD_BYTES="2048")
    bad = [
        "{oops",
        json.dumps({"photo_id": "x", "user_id": 1, "path": "a", "tasks": []}),
        json.dumps({"user_id": 1, "path": "a", "tasks": ["clip"]}),
        json.dumps({"photo_id": 1, "pad": "y" * 4000}),
    ]
    for raw in bad:
        conn.lpush("photo_tasks", raw)
    conn.lpush("photo_tasks", photo(9, ["clip"]))
    router.consume_once("photo_tasks", block_s=0.1)
    letters = {item.letter.raw: item.letter for item in DeadLetterQueue(conn, "photo_tasks_dlq").scan()}
    assert set(letters) == set(bad)
    assert all(letter.error_type == "BadPayload" and letter.capability is None for letter in letters.values())
    assert "not valid JSON" in letters["{oops"].error
    assert "photo_id" in letters[bad[2]].error
    assert "over the 2048-byte limit" in letters[bad[3]].error
    assert payload_ids(queued(conn, Capability.CLIP)) == [9]
    assert conn.llen(processing_list("photo_tasks", router.consumer_id)) == 0


def test_backend_only_tasks_are_consumed_without_jobs(make_settings, redis_url) -> None:
    router, conn = make_router(make_settings, redis_url)
    conn.lpush("photo_tasks", photo(1, ["thumbnail"]))
    router.consume_once("photo_tasks", block_s=0.1)
    assert all(queued(conn, cap) == [] for cap in Capability)
    assert conn.llen("photo_tasks") == 0 and conn.llen("photo_tasks_dlq") == 0


def test_text_jobs_and_text_dead_letters(make_settings, redis_url) -> None:
    router, conn = make_router(make_settings, redis_url)
    conn.lpush(
        "text_tasks", json.dumps({"type": "text_embed", "request_id": 3, "query": "a cat", "model": "m"})
    )
    conn.lpush("text_tasks", json.dumps({"type": "text_embed", "request_id": 4}))
    router.consume_once("text_tasks", block_s=0.1)
    assert payload_ids(queued(conn, Capability.TEXT)) == [3]
    [letter] = [i.letter for i in DeadLetterQueue(conn, "text_tasks_dlq").scan()]
    assert letter.error_type == "BadPayload" and "query" in letter.error


def test_payloads_left_by_our_own_crash_are_dispatched(make_settings, redis_url) -> None:
    router, conn = make_router(make_settings, redis_url)
    # As if we died between BLMOVE and the dispatch transaction.
    conn.lpush(processing_list("photo_tasks", router.consumer_id), photo(7, ["clip"]))
    router.drain_processing("photo_tasks")
    assert payload_ids(queued(conn, Capability.CLIP)) == [7]
    assert conn.llen(processing_list("photo_tasks", router.consumer_id)) == 0


def test_dead_consumers_payloads_go_back_to_the_backend_list(make_settings, redis_url) -> None:
    router, conn = make_router(make_settings, redis_url)
    conn.sadd(CONSUMERS_SET, "dead-one")  # registered once, heartbeat key long expired
    held = processing_list("photo_tasks", "dead-one")
    conn.lpush(held, photo(1, ["clip"]), photo(2, ["clip"]))
    conn.lpush("photo_tasks", photo(3, ["clip"]))
    assert router.recover_dead_consumers() == 2
    assert conn.llen(held) == 0 and not conn.sismember(CONSUMERS_SET, "dead-one")
    while router.consume_once("photo_tasks", block_s=0.1):
        pass
    assert sorted(payload_ids(queued(conn, Capability.CLIP))) == [1, 2, 3]


def test_live_consumers_are_left_alone(make_settings, redis_url) -> None:
    router, conn = make_router(make_settings, redis_url)
    other, _ = make_router(make_settings, redis_url)
    conn.lpush("photo_tasks", photo(1, ["clip"]))
    other._register()
    conn.lpush(processing_list("photo_tasks", other.consumer_id), photo(2, ["clip"]))
    assert router.recover_dead_consumers() == 0


def test_concurrent_routers_hand_off_each_payload_exactly_once(make_settings, redis_url) -> None:
    routers = [make_router(make_settings, redis_url, MINDSIGHT_BATCH_SIZE="4")[0] for _ in range(3)]
    conn = redis.Redis.from_url(redis_url)
    n = 120
    for pid in range(n):
        conn.lpush("photo_tasks", photo(pid, ["clip"]))

    def drain(r: Router) -> None:
        while r.consume_once("photo_tasks", block_s=0.2):
            pass

    threads = [threading.Thread(target=drain, args=(r,)) for r in routers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    counts = Counter(payload_ids(queued(conn, Capability.CLIP)))
    assert sorted(counts) == list(range(n)) and set(counts.values()) == {1}
