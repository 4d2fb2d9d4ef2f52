"""The router against a real Redis: reliable hand-off, batching, bad input, dead consumers."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx
import pytest
import redis
from rq.job import Job
from rq.serializers import JSONSerializer
from rq.worker import Worker

from mindsight.cli.status_cmd import collect
from shared.dead_letter import DeadLetterQueue
from shared.embedded_redis import free_port
from shared.metrics import serve_health
from shared.payloads import Capability
from shared.queues import CONSUMERS_SET, ROUTER_CRASHES, consumer_heartbeat, processing_list
from shared.settings import Settings
from workers.delivery.envelope import JobEnvelope
from workers.dispatch import job_size, rq_queue
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


@pytest.mark.parametrize(
    ("items", "backlog", "workers", "size"),
    [(8, 4, 2, 6), (4, 0, 2, 2), (8, 32, 2, 8), (8, 0, 0, 8), (8, 0, 1, 8), (1, 0, 4, 1), (8, 0, 3, 3)],
)
def test_job_size_spreads_the_work_in_hand_and_behind_over_the_workers(
    items: int, backlog: int, workers: int, size: int
) -> None:
    assert job_size(items, backlog, workers) == size


def register_workers(conn: redis.Redis, cap: Capability, n: int) -> None:
    for i in range(n):
        Worker([rq_queue(conn, cap)], connection=conn, name=f"w{i}-{cap.value}").register_birth()


def test_a_short_burst_is_cut_so_every_worker_gets_an_equal_share(make_settings, redis_url) -> None:
    """12 photos, 2 clip workers: jobs of 8 and 4 kept one worker busy for 8 photos while the other
    idled after 4; now each gets 6."""
    router, conn = make_router(make_settings, redis_url, MINDSIGHT_BATCH_SIZE="8")
    register_workers(conn, Capability.CLIP, 2)
    conn.lpush("photo_tasks", *[photo(pid, ["clip"]) for pid in range(1, 13)])
    assert [router.consume_once("photo_tasks", block_s=0.1) for _ in range(2)] == [8, 4]
    jobs = queued(conn, Capability.CLIP)
    assert [len(envelope(j).payloads) for j in jobs] == [6, 2, 2, 2]
    assert payload_ids(jobs) == list(range(1, 13))
    # The caption queue has no worker registered: its share stays one job per take.
    assert [len(envelope(j).payloads) for j in queued(conn, Capability.CAPTION)] == [8, 4]


def test_a_deep_backlog_keeps_full_batches_with_many_workers(make_settings, redis_url) -> None:
    router, conn = make_router(make_settings, redis_url, MINDSIGHT_BATCH_SIZE="8")
    register_workers(conn, Capability.CLIP, 3)
    conn.lpush("photo_tasks", *[photo(pid, ["clip"]) for pid in range(1, 101)])
    router.consume_once("photo_tasks", block_s=0.1)
    assert [len(envelope(j).payloads) for j in queued(conn, Capability.CLIP)] == [8]


def test_a_batch_from_a_deep_backlog_costs_two_round_trips(
    make_settings, redis_url, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One pipeline of atomic LMOVEs (plus the crash-record and busy reads), then the MULTI/EXEC:
    moving the payloads one by one cost a round trip each (benchmarks.router_bench measures the rate)."""
    router, conn = make_router(make_settings, redis_url, MINDSIGHT_BATCH_SIZE="8")
    conn.lpush("photo_tasks", *[photo(pid) for pid in range(1, 41)])
    router.consume_once("photo_tasks", block_s=0.1)
    monkeypatch.setattr(router, "_register", lambda: None)  # the heartbeat (once a second) is not counted
    sent: list[bytes] = []
    real_send = redis.connection.AbstractConnection.send_packed_command

    def counting_send(self, command, check_health=True):  # type: ignore[no-untyped-def]
        sent.append(command if isinstance(command, bytes) else b"".join(command))
        return real_send(self, command, check_health)

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counting_send)
    taken = [router.consume_once("photo_tasks", block_s=0.1) for _ in range(3)]
    round_trips = list(sent)

    assert taken == [8, 8, 8]
    assert len(round_trips) == 2 * 3, [c[:60] for c in round_trips]
    assert payload_ids(queued(conn, Capability.CLIP)) == list(range(1, 33))


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
    for pid in range(1, n + 1):
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
    assert sorted(counts) == list(range(1, n + 1)) and set(counts.values()) == {1}


# -- hostile input cannot stop a consumer (issue 8, defect 1) -----------------------------------------
DEEP_LIST = "[" * 1000 + "]" * 1000
DEEP_OBJECT = '{"a":' * 1000 + "1" + "}" * 1000


def text(rid: int) -> str:
    return json.dumps({"type": "text_embed", "request_id": rid, "query": "a cat"})


@contextmanager
def running(router: Router) -> Iterator[threading.Thread]:
    """`router.run()` in a thread, as `mindsight router` runs it; stopped and joined afterwards."""
    thread = threading.Thread(target=router.run, name="router-under-test", daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        router.stop()
        thread.join(timeout=30)


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.mark.parametrize("poison", [DEEP_LIST, DEEP_OBJECT], ids=["list", "object"])
@pytest.mark.parametrize("source", ["photo_tasks", "text_tasks"])
def test_deeply_nested_payload_is_dead_lettered_and_routing_goes_on(
    make_settings, redis_url, source: str, poison: str
) -> None:
    router, conn = make_router(make_settings, redis_url)
    is_text = source == "text_tasks"
    cap = Capability.TEXT if is_text else Capability.CLIP
    conn.lpush(source, poison)
    with running(router):
        conn.lpush(source, text(5) if is_text else photo(5, ["clip"]))
        wait_until(lambda: payload_ids(queued(conn, cap)) == [5], "the later good job to be routed")
        [letter] = [i.letter for i in DeadLetterQueue(conn, f"{source}_dlq").scan()]
        assert letter.raw == poison and letter.error_type == "BadPayload"
        assert "nested" in letter.error
        assert conn.llen(processing_list(source, router.consumer_id)) == 0


def test_an_unexpected_error_dead_letters_only_its_item_and_consuming_goes_on(
    make_settings, redis_url, monkeypatch: pytest.MonkeyPatch
) -> None:
    router, conn = make_router(make_settings, redis_url, MINDSIGHT_BATCH_SIZE="8")
    real_add = router.dispatcher.add

    def add(pipe, cap, payloads, **kw):  # a bug somewhere below the router, triggered by one photo
        if any(p["photo_id"] == 2 for p in payloads):
            raise KeyError("boom on photo 2")
        return real_add(pipe, cap, payloads, **kw)

    monkeypatch.setattr(router.dispatcher, "add", add)
    for pid in (1, 2, 3):
        conn.lpush("photo_tasks", photo(pid, ["clip"]))
    with running(router):
        wait_until(lambda: len(DeadLetterQueue(conn, "photo_tasks_dlq")) == 1, "the dead letter")
        conn.lpush("photo_tasks", photo(4, ["clip"]))
        wait_until(lambda: sorted(payload_ids(queued(conn, Capability.CLIP))) == [1, 3, 4], "the rest")
    [letter] = [i.letter for i in DeadLetterQueue(conn, "photo_tasks_dlq").scan()]
    assert letter.error_type == "KeyError" and "boom on photo 2" in letter.error
    assert letter.raw == photo(2, ["clip"]) and letter.source_queue == "photo_tasks"
    assert conn.llen(processing_list("photo_tasks", router.consumer_id)) == 0


# -- poison-pill rule: a payload that took down two consumers is not handed to a third -------------------
def die_holding(conn: redis.Redis, consumer_id: str, source: str, *raws: str) -> None:
    """As if router `consumer_id` had taken `raws` and then been killed (its heartbeat long expired)."""
    conn.sadd(CONSUMERS_SET, consumer_id)
    conn.lpush(processing_list(source, consumer_id), *raws)


def test_a_payload_that_crashed_two_consumers_is_dead_lettered_unparsed(make_settings, redis_url) -> None:
    router, conn = make_router(make_settings, redis_url)
    pill = photo(66, ["clip"])
    die_holding(conn, "dead-1", "photo_tasks", pill)
    assert router.recover_dead_consumers() == 1  # first crash: it may have been bad luck, retried
    assert conn.lrange("photo_tasks", 0, -1) == [pill.encode()]
    conn.delete("photo_tasks")
    die_holding(conn, "dead-2", "photo_tasks", pill)  # the next router took it and died as well
    router.recover_dead_consumers()
    assert conn.llen("photo_tasks") == 0
    [letter] = [i.letter for i in DeadLetterQueue(conn, "photo_tasks_dlq").scan()]
    assert letter.error_type == "PoisonPill" and letter.raw == pill and letter.payload is None
    assert "2 consumers" in letter.error and letter.capability is None


def test_recovered_suspects_are_tried_alone_so_a_pill_takes_no_neighbour_with_it(
    make_settings, redis_url
) -> None:
    router, conn = make_router(make_settings, redis_url, MINDSIGHT_BATCH_SIZE="8")
    die_holding(conn, "dead-1", "photo_tasks", photo(1, ["clip"]), photo(2, ["clip"]), photo(3, ["clip"]))
    router.recover_dead_consumers()
    conn.lpush("photo_tasks", photo(4, ["clip"]))
    while router.consume_once("photo_tasks", block_s=0.1):
        pass
    jobs = queued(conn, Capability.CLIP)
    # The fresh photo goes in a batch; each suspect goes alone, so a second crash names one payload.
    assert sorted(len(envelope(j).payloads) for j in jobs) == [1, 1, 1, 1]
    assert sorted(payload_ids(jobs)) == [1, 2, 3, 4]
    assert conn.hlen(ROUTER_CRASHES) == 0  # delivered suspects are cleared


# -- watchdog: liveness means the consumers are alive ------------------------------------------------
class ThreadKiller(BaseException):
    """Not an Exception: what still ends a consume thread (the catch-all spares only stop requests)."""


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_dead_consume_thread_makes_the_router_unhealthy_and_stop(
    make_settings, redis_url, monkeypatch: pytest.MonkeyPatch
) -> None:
    router, conn = make_router(make_settings, redis_url, MINDSIGHT_HEARTBEAT_S="1")
    real_consume = router.consume_once

    def consume_once(source: str, block_s: float = 1.0) -> int:
        if source == "text_tasks":
            raise ThreadKiller("consume thread ends")
        return real_consume(source, block_s)

    monkeypatch.setattr(router, "consume_once", consume_once)
    health = serve_health(free_port(), lambda: (True, {}), host="127.0.0.1", live_check=router.problems)
    assert health is not None
    url = f"http://127.0.0.1:{health.server_address[1]}"
    try:
        with running(router) as thread:
            wait_until(lambda: not thread.is_alive(), "the router to stop itself")
        [problem] = router.problems()
        assert "text_tasks" in problem and "dead" in problem
        assert router.exit_code() == 1
        # Heartbeat withheld: another router will recover what we hold once it expires.
        conn.delete(consumer_heartbeat(router.consumer_id))
        router._last_beat = 0.0
        router._register()
        assert not conn.exists(consumer_heartbeat(router.consumer_id))
        # /healthz and /readyz say so, for an orchestrator.
        healthz = httpx.get(f"{url}/healthz")
        assert healthz.status_code == 503 and "text_tasks" in healthz.json()["problems"][0]
        assert httpx.get(f"{url}/readyz").status_code == 503
        # `mindsight status` says so, for an operator.
        [row] = collect(conn, router.settings)["routers"]
        assert row["id"] == router.consumer_id and "text_tasks" in row["unhealthy"]
    finally:
        health.shutdown()
        health.server_close()


def test_a_stuck_consume_thread_makes_the_router_unhealthy_and_stop(
    make_settings, redis_url, monkeypatch: pytest.MonkeyPatch
) -> None:
    router, conn = make_router(make_settings, redis_url, MINDSIGHT_HEARTBEAT_S="1")
    router.stuck_after_s = 4.0  # the healthy text thread comes round every ~1 s
    release = threading.Event()
    real_consume = router.consume_once

    def consume_once(source: str, block_s: float = 1.0) -> int:
        if source == "photo_tasks":
            release.wait()  # e.g. a Redis reply that never comes on a half-open connection
        return real_consume(source, block_s)

    monkeypatch.setattr(router, "consume_once", consume_once)
    try:
        with running(router) as thread:
            wait_until(lambda: not thread.is_alive(), "the router to stop itself")
    finally:
        release.set()
    [problem] = router.problems()
    assert "photo_tasks" in problem and "stuck" in problem
    assert router.exit_code() == 1


def test_a_healthy_router_stops_cleanly(make_settings, redis_url) -> None:
    router, conn = make_router(make_settings, redis_url)
    with running(router):
        wait_until(lambda: conn.exists(consumer_heartbeat(router.consumer_id)) == 1, "a heartbeat")
        assert router.problems() == []
    assert router.problems() == [] and router.exit_code() == 0
