"""A stop signal (SIGTERM from docker/k8s, Ctrl+C) never strands a job between RQ's dequeue and its run.

RQ moves a job id from the queue into `<queue>:intermediate` (BLMOVE) and only then into the started
registry. A StopRequested raised in that window left the id in the intermediate list, where RQ's own
clean-up looks at it twice a minute apart and then fails it without our failure callback: the job sat
there for minutes (the CI flake of test_wrong_token_pauses_and_keeps_the_jobs) and a batch was lost.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rq import Queue
from rq.serializers import JSONSerializer

from shared.payloads import Capability
from tests.test_delivery import Harness, harness  # noqa: F401 - the fixture
from workers.dispatch import rq_queue
from workers.rq_worker import MindsightWorker


@pytest.fixture(autouse=True)
def keep_signal_handlers() -> Iterator[None]:
    """RQ installs its own SIGINT/SIGTERM handlers in this process; put pytest's back afterwards."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


def signal_after_dequeue(worker: MindsightWorker) -> None:
    """Deliver SIGTERM's handler at the worst moment: the job id was just moved off the queue."""

    class SignalledQueue(Queue):
        @classmethod
        def dequeue_any(cls, *args: Any, **kwargs: Any) -> Any:
            result = super().dequeue_any(*args, **kwargs)
            if result is not None:
                worker.request_stop(signal.SIGTERM, None)
            return result

    worker.queue_class = SignalledQueue


@pytest.mark.parametrize("burst", [True, False])
def test_a_stop_signal_right_after_a_dequeue_runs_the_job_then_stops(
    harness: Harness,  # noqa: F811
    tmp_path: Path,
    burst: bool,
) -> None:
    photo = harness.photo(tmp_path)
    harness.enqueue(Capability.CLIP, [photo])
    queue = rq_queue(harness.redis, Capability.CLIP)
    worker = MindsightWorker(
        [queue], connection=harness.redis, serializer=JSONSerializer, heartbeat_s=1, pause=None
    )
    signal_after_dequeue(worker)
    worker.work(burst=burst, logging_level=None)
    assert harness.redis.llen(queue.intermediate_queue_key) == 0, "job stranded in the intermediate list"
    assert harness.delivered(photo["photo_id"])
    assert queue.count == 0
