"""Turn validated payloads into RQ jobs on the per-capability queues, inside the caller's transaction.

Every hand-off (router -> RQ, dead-letter requeue -> RQ, split of a failed batch) goes through here, and
always inside a Redis MULTI/EXEC together with the removal of the payload from where it came from, so a
crash half-way can neither lose nor double a job.

Jobs describe themselves in `meta` (dead-letter key, retry policy), so whoever handles their failure
(a worker, or the router cleaning up after a dead worker) needs no settings of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis
from redis.client import Pipeline
from rq import Callback, Queue, Retry
from rq.job import Job
from rq.serializers import JSONSerializer

from shared.payloads import Capability
from shared.queues import RQ_QUEUES
from shared.settings import RedisSettings, WorkerSettings

RESULT_TTL_S = 600
"""Finished jobs are kept ten minutes for dashboards; results live in the gallery, not here."""

FAILURE_TTL_S = 7 * 24 * 3600
"""RQ's own failed registry keeps a week of history; the dead-letter queue is the operator's record."""


@dataclass(frozen=True)
class JobPolicy:
    """What every job carries in `meta`: where its dead letters go and how it is retried."""

    dlq_key: str
    source_queue: str
    max_retries: int
    backoff: list[int]

    def as_meta(self, attempts_before: int = 0, retries_granted: int = 0) -> dict[str, Any]:
        return {
            "dlq": self.dlq_key,
            "source_queue": self.source_queue,
            "max_retries": self.max_retries,
            "backoff": self.backoff,
            "attempts_before": attempts_before,
            "retries_granted": retries_granted,
        }

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> JobPolicy:
        return cls(meta["dlq"], meta["source_queue"], int(meta["max_retries"]), list(meta["backoff"]))


def attempt_number(job: Job) -> int:
    """Which attempt the job is on (while running) or was on (when it failed), counting earlier jobs."""
    granted = int(job.meta.get("retries_granted", 0))
    return int(job.meta.get("attempts_before", 0)) + granted - (job.retries_left or 0) + 1


def rq_queue(connection: redis.Redis, capability: Capability) -> Queue:
    """The RQ queue of a capability (JSON serializer: jobs stay readable in Redis and dashboards)."""
    return Queue(RQ_QUEUES[capability], connection=connection, serializer=JSONSerializer)


class Dispatcher:
    """Adds capability jobs to a pipeline; the caller executes it together with its own changes."""

    def __init__(self, connection: redis.Redis, worker: WorkerSettings, queues: RedisSettings) -> None:
        self.connection = connection
        self.timeout_s = worker.job_timeout_s
        backoff = worker.backoff()
        self.photo_policy = JobPolicy(queues.photo_dlq, queues.photo_queue, worker.max_retries, backoff)
        self.text_policy = JobPolicy(queues.text_dlq, queues.text_queue, worker.max_retries, backoff)
        self._queues = {cap: rq_queue(connection, cap) for cap in Capability}

    def policy_for(self, capability: Capability) -> JobPolicy:
        return self.text_policy if capability is Capability.TEXT else self.photo_policy

    def add(
        self,
        pipe: Pipeline,
        capability: Capability,
        payloads: Sequence[dict[str, Any]],
        *,
        policy: JobPolicy | None = None,
        attempts_before: int = 0,
        at_front: bool = False,
    ) -> str:
        """Queue one job for `payloads` on `pipe`; returns the job id.

        A single-item job gets RQ retries with backoff. A multi-item batch gets none: if it fails it is
        split into single-item jobs (see workers.failure), so one poison photo never takes its
        neighbours to the dead-letter queue.
        """
        from workers import failure, jobs  # the job functions import this module

        policy = policy or self.policy_for(capability)
        retries_left = policy.max_retries - attempts_before
        retry = None
        if len(payloads) == 1 and retries_left > 0:
            retry = Retry(max=retries_left, interval=policy.backoff)
        func = jobs.run_text_batch if capability is Capability.TEXT else jobs.run_photo_batch
        args: tuple[Any, ...] = (
            (list(payloads),) if capability is Capability.TEXT else (capability.value, list(payloads))
        )
        data = Queue.prepare_data(
            func,
            args=args,
            timeout=self.timeout_s,
            result_ttl=RESULT_TTL_S,
            failure_ttl=FAILURE_TTL_S,
            retry=retry,
            on_failure=Callback(failure.on_job_failure),
            meta=policy.as_meta(attempts_before, retry.max if retry else 0),
            description=_describe(capability, payloads),
            at_front=at_front,
        )
        job = self._queues[capability].enqueue_many([data], pipeline=pipe)[0]
        return str(job.id)


def _describe(capability: Capability, payloads: Sequence[dict[str, Any]]) -> str:
    key = "request_id" if capability is Capability.TEXT else "photo_id"
    ids = [str(p.get(key)) for p in payloads[:8]]
    more = f" +{len(payloads) - 8}" if len(payloads) > 8 else ""
    return f"{capability.value} x{len(payloads)} [{','.join(ids)}{more}]"
