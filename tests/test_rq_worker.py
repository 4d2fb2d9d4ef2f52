"""Our RQ worker's loop against a real redis-server that goes away and comes back."""

from __future__ import annotations

import threading
import time

import pytest
import redis
from rq.serializers import JSONSerializer

from shared.embedded_redis import EmbeddedRedis
from shared.payloads import Capability
from workers.dispatch import rq_queue
from workers.rq_worker import MindsightWorker, work_until_stopped


def test_building_the_worker_is_retried_until_redis_is_back(private_redis: EmbeddedRedis) -> None:
    """Issue 8, defect 4: the worker's constructor talks to Redis (CLIENT SETNAME); it must not end us."""
    conn = redis.Redis.from_url(private_redis.url, socket_connect_timeout=1)
    attempts: list[BaseException | None] = []

    def make_worker() -> MindsightWorker:
        try:
            worker = MindsightWorker(
                [rq_queue(conn, Capability.CLIP)], connection=conn, serializer=JSONSerializer
            )
        except BaseException as exc:
            attempts.append(exc)
            raise
        attempts.append(None)
        return worker

    private_redis.stop()
    runner = threading.Thread(target=work_until_stopped, args=(make_worker,), kwargs={"burst": True})
    runner.start()
    deadline = time.monotonic() + 30
    while len(attempts) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(attempts) >= 2 and all(isinstance(a, redis.ConnectionError) for a in attempts)
    assert runner.is_alive()  # still waiting for Redis, not gone
    private_redis.start()
    runner.join(timeout=60)
    if runner.is_alive():
        pytest.fail("the worker loop did not come back after Redis returned")
    assert attempts[-1] is None  # built once Redis answered, and the burst ran
