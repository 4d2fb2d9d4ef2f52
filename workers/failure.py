"""What happens when an RQ job raised, timed out, or its worker died (RQ's failure callback).

- A job with RQ retries left: nothing here, RQ re-runs it after the backoff interval.
- A multi-item batch: split into single-item jobs (each with retries), so only the item that really fails
  ends up dead-lettered, not its neighbours.
- A single item out of retries: one dead-letter entry, and a best-effort "failed" callback.

The callback runs in whichever process notices the failure: the worker itself, or the router's periodic
clean-up of jobs whose worker stopped sending heartbeats (killed, OOM, power loss).
"""

from __future__ import annotations

import logging
from types import TracebackType
from typing import Any

import redis
from rq.job import Job

from shared.dead_letter import DeadLetter, DeadLetterQueue
from shared.payloads import Capability
from workers import runtime
from workers.dispatch import Dispatcher, JobPolicy, attempt_number

log = logging.getLogger(__name__)


def job_items(job: Job) -> tuple[Capability, list[dict[str, Any]]]:
    """(capability, payloads) of one of our jobs, from its arguments."""
    if len(job.args) == 1:
        return Capability.TEXT, list(job.args[0])
    return Capability(job.args[0]), list(job.args[1])


def on_job_failure(
    job: Job,
    connection: redis.Redis,
    exc_type: type[BaseException] | None,
    exc_value: BaseException | None,
    tb: TracebackType | None,
) -> None:
    """RQ on_failure callback for every job the Dispatcher creates."""
    if job.retries_left:
        log.warning(
            "job %s failed (%s), RQ retries it (%d left)",
            job.id,
            exc_type and exc_type.__name__,
            job.retries_left,
        )
        return
    capability, payloads = job_items(job)
    policy = JobPolicy.from_meta(job.meta)
    attempts = attempt_number(job)
    reason = exc_value if exc_value is not None else RuntimeError("job failed")
    if isinstance(reason, Exception) and type(reason).__name__ == "AbandonedJobError":
        reason = RuntimeError("worker died while running this job (killed, out of memory, or lost)")

    if len(payloads) > 1:
        dispatcher = _dispatcher(connection)
        with connection.pipeline() as pipe:
            for payload in payloads:
                dispatcher.add(pipe, capability, [payload], policy=policy, attempts_before=attempts)
            pipe.execute()
        log.warning(
            "batch job %s of %d failed (%s: %s); re-queued as single jobs",
            job.id,
            len(payloads),
            type(reason).__name__,
            reason,
        )
        return

    dlq = DeadLetterQueue(connection, policy.dlq_key)
    with connection.pipeline() as pipe:
        for payload in payloads:
            letter = DeadLetter.from_exception(
                reason,
                capability=capability.value,
                payload=payload,
                attempts=attempts,
                worker=job.worker_name or "",
                source_queue=policy.source_queue,
            )
            dlq.push(letter, pipe)
        pipe.execute()
    log.error(
        "job %s dead-lettered after %d attempt(s): %s: %s", job.id, attempts, type(reason).__name__, reason
    )
    _report_failed(capability, payloads, reason)


def _dispatcher(connection: redis.Redis) -> Dispatcher:
    try:
        return runtime.current().dispatcher
    except RuntimeError:  # not in a worker or router process (tests, scripts): plain defaults
        from shared.settings import RedisSettings, WorkerSettings

        return Dispatcher(connection, WorkerSettings(), RedisSettings())


def _report_failed(capability: Capability, payloads: list[dict[str, Any]], reason: BaseException) -> None:
    if capability is Capability.TEXT:
        return
    try:
        ctx = runtime.current()
    except RuntimeError:
        return
    from workers.jobs import post_failure

    task = ctx.photo_tasks.get(capability)
    models = task.failure_models() if task else []
    for payload in payloads:
        post_failure(ctx, capability, payload, reason, models)
