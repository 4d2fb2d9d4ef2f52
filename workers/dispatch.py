"""Turn validated payloads into RQ jobs on the per-capability queues, inside the caller's transaction.

Every hand-off (router -> RQ, dead-letter requeue -> RQ, split of a failed batch, a deferred item) goes
through here, and always inside a Redis MULTI/EXEC together with the removal of the payload from where it
came from, so a crash half-way can neither lose nor double a job.

Each job carries one typed argument, its envelope (workers.delivery.envelope): capability, payloads,
attempt count and retry policy, so whoever handles its failure (a worker, or the router cleaning up after
a dead worker) needs no settings of its own. The entry points are given as handlers, not imported: the
job functions import this module, never the other way round.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import redis
from redis.client import Pipeline
from rq import Callback, Queue, Retry
from rq.serializers import JSONSerializer

from shared.lanes import Lane, by_priority, lanes_for
from shared.payloads import Capability
from shared.queues import rq_queue_name
from shared.settings import RedisSettings, WorkerSettings
from workers.delivery.envelope import DEFAULT_HANDLERS, Handlers, JobEnvelope, JobPolicy

RESULT_TTL_S = 600
"""Finished jobs are kept ten minutes for dashboards; results live in the gallery, not here."""

FAILURE_TTL_S = 7 * 24 * 3600
"""RQ's own failed registry keeps a week of history; the dead-letter queue is the operator's record."""


def rq_queue(connection: redis.Redis, capability: Capability, lane: Lane = Lane.INTERACTIVE) -> Queue:
    """The RQ queue of a capability's lane (JSON serializer: jobs stay readable in Redis and dashboards)."""
    return Queue(rq_queue_name(capability, lane), connection=connection, serializer=JSONSerializer)


def lane_queues(connection: redis.Redis, capabilities: Sequence[Capability]) -> list[Queue]:
    """The queues a worker for `capabilities` works, in the order it takes them: every interactive lane
    first, then the bulk lanes, each in capability priority order. RQ dequeues from the first non-empty
    queue, so bulk work waits only for interactive work, and captions only for the capabilities before
    them (shared.lanes)."""
    ordered = by_priority(capabilities)
    return [rq_queue(connection, cap, lane) for lane in Lane for cap in ordered if lane in lanes_for(cap)]


def job_size(items: int, backlog: int, workers: int) -> int:
    """How many of `items` payloads one job carries, so that the work in hand plus the `backlog` still
    waiting in the backend's list spreads over the `workers` serving the queue.

    A long backlog keeps jobs as full as the take (batching is where throughput comes from). At the end of
    a burst, or for a phone's dozen uploads, a full batch would leave one worker computing eight photos
    while another idles: 12 photos on 2 workers went out as jobs of 8 and 4, so the last image embedding
    came after 8 photos' worth of one core instead of 6. With no worker registered yet, one is assumed."""
    per_worker = -(-(items + backlog) // max(workers, 1))
    return max(1, min(items, per_worker))


class Dispatcher:
    """Adds capability jobs to a pipeline; the caller executes it together with its own changes."""

    def __init__(
        self,
        connection: redis.Redis,
        worker: WorkerSettings,
        queues: RedisSettings,
        handlers: Handlers = DEFAULT_HANDLERS,
    ) -> None:
        self.connection = connection
        self.handlers = handlers
        self.timeout_s = worker.job_timeout_s
        backoff = worker.backoff()
        self.photo_policy = JobPolicy(queues.photo_dlq, queues.photo_queue, worker.max_retries, backoff)
        self.text_policy = JobPolicy(queues.text_dlq, queues.text_queue, worker.max_retries, backoff)
        # Bulk jobs record the bulk list as their source, so their dead letters are requeued as bulk work.
        self.bulk_policy = replace(self.photo_policy, lane=Lane.BULK, source_queue=queues.photo_bulk_queue)
        self._queues = {
            (cap, lane): rq_queue(connection, cap, lane) for cap in Capability for lane in lanes_for(cap)
        }

    def policy_for(self, capability: Capability, lane: Lane = Lane.INTERACTIVE) -> JobPolicy:
        """The policy of new jobs for a capability's lane (text has the interactive lane only)."""
        if capability is Capability.TEXT:
            return self.text_policy
        return self.photo_policy if lane is Lane.INTERACTIVE else self.bulk_policy

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
        split into single-item jobs of its unsettled items (see workers.failure), so one poison photo
        never takes its neighbours to the dead-letter queue.
        """
        policy = policy or self.policy_for(capability)
        retries_left = policy.max_retries - attempts_before
        retry = None
        if len(payloads) == 1 and retries_left > 0:
            retry = Retry(max=retries_left, interval=policy.backoff)
        envelope = JobEnvelope(
            capability=capability,
            payloads=list(payloads),
            policy=policy,
            attempts_before=attempts_before,
            retries_granted=retry.max if retry else 0,
        )
        data = Queue.prepare_data(
            self.handlers.run,
            args=(envelope.to_wire(),),
            timeout=self.timeout_s,
            result_ttl=RESULT_TTL_S,
            failure_ttl=FAILURE_TTL_S,
            retry=retry,
            on_failure=Callback(self.handlers.on_failure),
            description=_describe(capability, payloads),
            at_front=at_front,
        )
        job = self._queues[(capability, policy.lane)].enqueue_many([data], pipeline=pipe)[0]
        return str(job.id)


def _describe(capability: Capability, payloads: Sequence[dict[str, Any]]) -> str:
    key = "request_id" if capability is Capability.TEXT else "photo_id"
    ids = [str(p.get(key)) for p in payloads[:8]]
    more = f" +{len(payloads) - 8}" if len(payloads) > 8 else ""
    return f"{capability.value} x{len(payloads)} [{','.join(ids)}{more}]"
