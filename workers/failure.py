"""What happens when an RQ job raised, timed out, or its worker died (RQ's failure callback).

- A job with RQ retries left: nothing here, RQ re-runs it after the backoff interval.
- A multi-item batch: split into single-item jobs (each with retries) of the items not yet settled, so
  only the item that really fails ends up dead-lettered, and nothing is dead-lettered or delivered twice.
- A single item out of retries: one dead-letter entry, and a best-effort "failed" callback.

The callback runs in whichever process notices the failure: the worker itself, or the router's periodic
clean-up of jobs whose worker stopped sending heartbeats (killed, OOM, power loss).
"""

from __future__ import annotations

import logging
from types import TracebackType

import redis
from rq.job import Job

from shared.payloads import Capability
from shared.settings import RedisSettings, WorkerSettings
from workers import runtime
from workers.delivery import settled
from workers.delivery.envelope import JobEnvelope
from workers.delivery.outcomes import dead_letter, report_failed
from workers.dispatch import Dispatcher

log = logging.getLogger(__name__)


def envelope_of(job: Job) -> JobEnvelope:
    """The envelope of one of our jobs (jobs queued before the envelope get today's default policy)."""
    if len(job.args) == 1 and isinstance(job.args[0], dict):
        return JobEnvelope.from_wire(job.args[0])
    dispatcher = _dispatcher(job.connection)
    cap = Capability.TEXT if len(job.args) == 1 else Capability(job.args[0])
    return JobEnvelope(cap, list(job.args[-1]), dispatcher.policy_for(cap))


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
    env = envelope_of(job)
    attempt = env.attempt(job.retries_left)
    reason = exc_value if exc_value is not None else RuntimeError("job failed")
    if isinstance(reason, Exception) and type(reason).__name__ == "AbandonedJobError":
        reason = RuntimeError("worker died while running this job (killed, out of memory, or lost)")
    payloads = settled.unsettled(job, env.payloads)

    if len(env.payloads) > 1:
        dispatcher = _dispatcher(connection)
        with connection.pipeline() as pipe:
            for payload in payloads:
                dispatcher.add(pipe, env.capability, [payload], policy=env.policy, attempts_before=attempt)
            pipe.execute()
        log.warning(
            "batch job %s of %d failed (%s: %s); its %d unsettled item(s) re-queued as single jobs",
            job.id,
            len(env.payloads),
            type(reason).__name__,
            reason,
            len(payloads),
        )
        return

    with connection.pipeline() as pipe:
        for payload in payloads:
            dead_letter(connection, env, payload, reason, attempt, job.worker_name or "", pipe)
        pipe.execute()
    ctx = runtime.installed()
    task = ctx.photo_tasks.get(env.capability) if ctx is not None else None
    for payload in payloads:
        report_failed(
            ctx.gallery if ctx is not None else None,
            env.capability,
            payload,
            reason,
            task.failure_models() if task is not None else [],
        )


def _dispatcher(connection: redis.Redis) -> Dispatcher:
    ctx = runtime.installed()
    if ctx is not None:
        return ctx.dispatcher
    # Not in a worker or router process (tests, scripts): plain defaults.
    return Dispatcher(connection, WorkerSettings(), RedisSettings())
