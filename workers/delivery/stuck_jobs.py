"""Find and remove RQ jobs wherever they sit (queue, intermediate list, registries): `mindsight jobs`.

Removing a job never loses its work silently: its unsettled payloads are dead-lettered (reason
`removed_by_operator`) in the same MULTI/EXEC that deletes the job, unless the operator asks to drop them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import redis
from rq.job import Job
from rq.queue import Queue
from rq.serializers import JSONSerializer

from shared.errors import PermanentError
from shared.payloads import Capability
from workers.delivery import settled
from workers.delivery.envelope import JobEnvelope
from workers.delivery.outcomes import dead_letter
from workers.dispatch import lane_queues

PLACES = ("queued", "intermediate", "started", "scheduled", "deferred", "failed")
"""Where a job can be, in the order a job normally passes through them."""


class RemovedByOperator(PermanentError):
    """An operator removed the job with `mindsight jobs rm`."""

    error_type = "removed_by_operator"


@dataclass(frozen=True)
class JobRow:
    """One job as `jobs ls` shows it."""

    id: str
    capability: str
    queue: str
    place: str
    item_ids: list[Any]
    attempt: int | None
    age_s: float | None
    description: str
    error: str

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def _ids(queue: Queue, place: str) -> list[str]:
    conn = queue.connection
    match place:
        case "queued":
            return queue.get_job_ids()
        case "intermediate":
            return [i.decode() for i in conn.lrange(queue.intermediate_queue_key, 0, -1)]  # type: ignore[union-attr]  # redis-py stubs: bytes replies
        case "started":
            return queue.started_job_registry.get_job_ids()
        case "scheduled":
            return queue.scheduled_job_registry.get_job_ids()
        case "deferred":
            return queue.deferred_job_registry.get_job_ids()
        case _:
            return queue.failed_job_registry.get_job_ids()


def find(
    connection: redis.Redis, capabilities: list[Capability], places: tuple[str, ...] = PLACES
) -> list[JobRow]:
    """Every job of `capabilities` in `places`."""
    rows = []
    for cap in capabilities:
        for queue in lane_queues(connection, [cap]):  # the interactive and the bulk lane
            for place in places:
                for job_id in _ids(queue, place):
                    rows.append(_row(job_id, cap, queue.name, place, queue.fetch_job(job_id)))
    return rows


def _row(job_id: str, cap: Capability, queue: str, place: str, job: Job | None) -> JobRow:
    if job is None:
        return JobRow(job_id, cap.value, queue, place, [], None, None, "(job data gone)", "")
    env = _envelope(job)
    created = job.created_at.timestamp() if job.created_at else None
    error = ""
    if place == "failed":
        result = job.latest_result()
        lines = (result.exc_string or "").strip().splitlines() if result is not None else []
        error = lines[-1] if lines else ""
    return JobRow(
        id=job_id,
        capability=cap.value,
        queue=queue,
        place=place,
        item_ids=[env.item_id(p) for p in env.payloads] if env else [],
        attempt=env.attempt(job.retries_left) if env else None,
        age_s=round(time.time() - created, 1) if created else None,
        description=job.description or "",
        error=error,
    )


def _envelope(job: Job) -> JobEnvelope | None:
    try:
        return JobEnvelope.from_wire(job.args[0])
    except (IndexError, KeyError, TypeError, ValueError):
        return None


def remove(connection: redis.Redis, job_id: str, queue_name: str, keep: bool = True) -> int:
    """Delete the job from every place; with `keep`, dead-letter its unsettled payloads. Returns how many."""
    queue = Queue(queue_name, connection=connection, serializer=JSONSerializer)
    job = queue.fetch_job(job_id)
    env = _envelope(job) if job is not None else None
    payloads = settled.unsettled(job, env.payloads) if (job is not None and env is not None) else []
    reason = RemovedByOperator(f"job {job_id} removed with `mindsight jobs rm`")
    with connection.pipeline() as pipe:
        if keep and env is not None:
            for payload in payloads:
                attempt = env.attempt(job.retries_left if job is not None else None)
                dead_letter(connection, env, payload, reason, attempt, "operator", pipe)
        pipe.lrem(queue.intermediate_queue_key, 0, job_id)
        pipe.lrem(queue.key, 0, job_id)
        for registry in (
            queue.scheduled_job_registry,
            queue.deferred_job_registry,
            queue.failed_job_registry,
        ):
            registry.remove(job_id, pipeline=pipe)
        if job is not None:
            queue.started_job_registry.remove_executions(job, pipeline=pipe)
            job.delete(pipeline=pipe, remove_from_queue=False)
        pipe.execute()
    return len(payloads) if keep else 0
