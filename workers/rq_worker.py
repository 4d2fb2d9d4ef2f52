"""Our RQ worker: models stay loaded (no fork per job), heartbeats while a job runs, pauses on outages.

RQ's SimpleWorker runs jobs in-process but sends no heartbeat while a job runs, so a killed worker's job
would sit in the started registry for job_timeout + 60 s before anyone noticed. Here a heartbeat thread
extends the job's lease every MINDSIGHT_HEARTBEAT_S by MINDSIGHT_ABANDONED_AFTER_S: when a worker dies,
its job is declared abandoned at most that long after the last beat, and the next registry clean-up
(every few seconds, by the router) hands it to the failure policy (retry or split).

`work_until_stopped` keeps a process working through Redis outages of any length: building a worker
talks to Redis (CLIENT SETNAME, CLIENT INFO), so it is retried together with the work loop, with backoff,
until a stop request.

A stop signal (SIGTERM, Ctrl+C) never interrupts a dequeue: RQ moves a job id off the queue into
`<queue>:intermediate` before it registers it as started, and a StopRequested raised in between left the
job there, invisible to everyone for minutes. While a dequeue is under way the signal only asks the loop
to stop; the dequeue waits in slices of at most STOP_WITHIN_S, and a job it got is run before stopping.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

import redis
from rq.executions import Execution
from rq.job import Job
from rq.queue import Queue
from rq.worker import SimpleWorker, WorkerStatus

from workers.runtime import PauseControl

log = logging.getLogger(__name__)

STOP_WITHIN_S = 5
"""An idle worker notices a stop signal within this many seconds (inside docker's 10 s stop grace)."""


class MindsightWorker(SimpleWorker):
    """SimpleWorker with a job heartbeat thread and a gallery-outage pause before each dequeue."""

    def __init__(
        self,
        *args: Any,
        heartbeat_s: int = 10,
        abandoned_after_s: int = 45,
        pause: PauseControl | None = None,
        job_timeout_s: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.job_timeout_s = job_timeout_s
        self.heartbeat_s = heartbeat_s
        self.abandoned_after_s = max(abandoned_after_s, 2 * heartbeat_s)
        self.pause = pause
        self.stop_requested_by_signal = False
        self._holding_job = False  # between the start of a dequeue and the end of the job it returned

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        """Lease of a running job: short, because the heartbeat thread keeps renewing it."""
        return self.abandoned_after_s

    def execute_job(self, job: Job, queue: Queue) -> None:
        if self.job_timeout_s:
            # The worker knows how fast it is (GPU or CPU): its own MINDSIGHT_JOB_TIMEOUT_S applies.
            job.timeout = self.job_timeout_s
        execution = self.prepare_execution(job)
        try:
            with self._beating(job, execution):
                self.perform_job(job, queue, execution)
        finally:
            self._holding_job = False
        self.set_state(WorkerStatus.IDLE)

    def dequeue_job_and_maintain_ttl(
        self, timeout: int | None, max_idle_time: int | None = None
    ) -> tuple[Job, Queue] | None:
        if self.pause is not None and self.pause.remaining() > 0:
            self.set_state(WorkerStatus.SUSPENDED)
            self.pause.wait(tick=self.heartbeat)  # a stop signal here raises at once: no job is held
        self._holding_job = True
        result = None
        try:
            if timeout is None or max_idle_time is not None:  # burst mode / RQ's idle exit: one call
                result = super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)
                return result
            step = max(1, min(timeout, self.heartbeat_s, STOP_WITHIN_S))
            while result is None and not self._stop_requested:
                # max_idle_time makes RQ return None after one empty wait instead of blocking on.
                result = super().dequeue_job_and_maintain_ttl(step, max_idle_time=step)
            return result
        finally:
            if result is None:
                self._holding_job = False

    def request_stop(self, signum: Any, frame: Any) -> None:
        self.stop_requested_by_signal = True
        super().request_stop(signum, frame)

    def _shutdown(self) -> None:
        if self._holding_job:
            # Raising StopRequested now could strand the job RQ is moving off the queue: stop after it.
            self._stop_requested = True
            return
        super()._shutdown()

    @contextlib.contextmanager
    def _beating(self, job: Job, execution: Execution) -> Iterator[None]:
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(self.heartbeat_s):
                try:
                    self.maintain_heartbeats(job, execution)
                except Exception as exc:  # Redis blip: the next beat retries; the lease has slack
                    log.warning("heartbeat for job %s failed: %s", job.id, exc)

        thread = threading.Thread(target=beat, name=f"heartbeat-{job.id}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=5)


RESTART_BACKOFF_MAX_S = 30.0
"""Longest wait between two attempts to rebuild the worker while Redis is unreachable."""


def work_until_stopped(make_worker: Callable[[], MindsightWorker], burst: bool = False) -> None:
    """Build a worker and work; rebuild it (models kept) whenever the loop ends for any reason but a stop.

    Nothing but SIGTERM/SIGINT (or the end of a burst) ends this: a Redis outage of any length, while
    building or while working, is waited out with backoff.
    """
    stop = threading.Event()
    backoff = 1.0
    while not stop.is_set():
        worker: MindsightWorker | None = None
        try:
            worker = make_worker()
            worker.work(burst=burst, logging_level=None)
        except redis.RedisError as exc:
            log.warning("worker lost Redis: %s", exc)
        except Exception:  # the loop is ours to keep: log it, rebuild, carry on
            log.exception("worker loop failed")
        if worker is not None and (burst or worker.stop_requested_by_signal):
            return
        # Between workers no RQ signal handler is ours: a stop request must end the wait, not the process.
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, lambda *_: stop.set())
        log.warning("worker loop ended (Redis unreachable?); rebuilding in %.0fs", backoff)
        stop.wait(backoff)
        backoff = min(backoff * 2, RESTART_BACKOFF_MAX_S)
    log.info("worker stopped while waiting for Redis")
