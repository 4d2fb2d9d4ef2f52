"""The RQ job: validate, decode, predict, post a batch; every item error goes through the policy table.

`workers.delivery.policy.decide` says what happens after each error; this module only carries it out:
- DEAD_LETTER: one entry (workers.delivery.outcomes) and a failed callback; the batch goes on.
- DEFER (gallery unavailable): if the gallery still answers (health probe), only this item is the problem:
  it goes to the back of the queue and the batch goes on, and once it has failed for
  MINDSIGHT_GALLERY_REJECT_AFTER_S while other callbacks got through it is dead-lettered as
  `gallery_rejected_repeatedly`. If the gallery does not answer, it is an outage: the undelivered items go
  back to the front with their attempt count unchanged and the worker pauses.
- PAUSE (token refused): like an outage, with a longer pause and a loud log.
- RETRY: the exception propagates to RQ (backoff retry; a batch is split into its unsettled items).
Each item is marked settled as it is delivered, dead-lettered or moved, so a split never repeats it.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from typing import Any

from rq import get_current_job
from rq.job import Job

from shared.errors import GalleryAuthError, GalleryRejectedRepeatedly
from shared.idempotency import callback_scope
from shared.metrics import BATCH_SIZE, JOBS, STAGE_SECONDS
from shared.payloads import Capability, PhotoJob, TextJob, validate_photo_job, validate_text_job
from workers import runtime
from workers.delivery import gallery_health, settled
from workers.delivery.envelope import JobEnvelope
from workers.delivery.outcomes import dead_letter, report_failed
from workers.delivery.policy import Outcome, decide
from workers.photo_decoder import DecodedPhoto
from workers.runtime import WorkerContext

log = logging.getLogger(__name__)


def run_job(envelope: dict[str, Any]) -> dict[str, int]:
    """RQ entry point of every job the Dispatcher creates."""
    env = JobEnvelope.from_wire(envelope)
    batch = Batch(runtime.current(), env, get_current_job())
    return batch.run_text() if env.capability is Capability.TEXT else batch.run_photos()


def run_photo_batch(capability: str, payloads: list[dict[str, Any]]) -> dict[str, int]:
    """Jobs queued by a version before the envelope (rolling upgrade): run with this worker's policy."""
    ctx, cap = runtime.current(), Capability(capability)
    return Batch(ctx, JobEnvelope(cap, payloads, ctx.dispatcher.policy_for(cap)), None).run_photos()


def run_text_batch(payloads: list[dict[str, Any]]) -> dict[str, int]:
    """Text jobs queued by a version before the envelope (rolling upgrade)."""
    ctx = runtime.current()
    env = JobEnvelope(Capability.TEXT, payloads, ctx.dispatcher.policy_for(Capability.TEXT))
    return Batch(ctx, env, None).run_text()


class _Stop(Exception):
    """The rest of the batch was deferred (outage or refused token): return normally."""


class Batch:
    """One run of one job: carries out the policy for each item and keeps the settled set."""

    def __init__(self, ctx: WorkerContext, env: JobEnvelope, job: Job | None) -> None:
        self.ctx, self.env, self.job = ctx, env, job
        self.cap = env.capability
        self.attempt = env.attempt(job.retries_left if job is not None else None)
        self.done = self.failed = self.deferred = 0
        self.delivered_ids: list[Any] = []
        self.last_deferral: BaseException | None = None
        task = ctx.photo_tasks.get(self.cap)
        self.models = task.failure_models() if task is not None else []

    # -- the two shapes of work ---------------------------------------------------------------------
    def run_photos(self) -> dict[str, int]:
        task = self.ctx.photo_tasks[self.cap]
        payloads = self.env.payloads
        BATCH_SIZE.labels(self.cap.value).observe(len(payloads))
        started = time.perf_counter()
        decoded: list[tuple[int, PhotoJob, DecodedPhoto]] = []
        try:
            with STAGE_SECONDS.labels(self.cap.value, "decode").time():
                valid: list[tuple[int, PhotoJob]] = []
                for i, payload in enumerate(payloads):
                    try:
                        job = validate_photo_job(payload)
                        task.check(job)
                        valid.append((i, job))
                    except Exception as exc:
                        self._failed(i, exc, remaining=[i])
                photos = self.ctx.decoder.load_all([job.path for _, job in valid], task.min_side)
                for (i, job), photo in zip(valid, photos, strict=True):
                    if isinstance(photo, Exception):
                        self._failed(i, photo, remaining=[i])
                    else:
                        decoded.append((i, job, photo))
            results: list[Any] = []
            if decoded:
                with STAGE_SECONDS.labels(self.cap.value, "inference").time():
                    results = task.compute_jobs(
                        [job for _, job, _ in decoded], [photo.image for _, _, photo in decoded]
                    )
            with STAGE_SECONDS.labels(self.cap.value, "callback").time():
                for k, ((i, job, photo), result) in enumerate(zip(decoded, results, strict=True)):
                    try:
                        with callback_scope(self.cap.value, payloads[i]):
                            task.post(self.ctx.gallery, job, photo, result)
                        self._delivered(i, job.photo_id)
                    except Exception as exc:
                        self._failed(i, exc, remaining=[j for j, _, _ in decoded[k:]])
        except _Stop:
            pass
        for label in self.models or [self.cap.value]:
            JOBS.labels(self.cap.value, label, "done").inc(self.done)
        return self._finish([p.get("photo_id") for p in payloads], time.perf_counter() - started)

    def run_text(self) -> dict[str, int]:
        task = self.ctx.text_task
        if task is None:
            raise RuntimeError("this worker does not serve the text queue")
        started = time.perf_counter()
        groups: dict[str, list[tuple[int, TextJob]]] = defaultdict(list)
        try:
            for i, payload in enumerate(self.env.payloads):
                try:
                    job = validate_text_job(payload)
                    groups[task.resolve(job)].append((i, job))
                except Exception as exc:
                    self._failed(i, exc, remaining=[i])
            with STAGE_SECONDS.labels("text", "inference").time():
                vectors = {
                    label: task.embed(label, [j.query for _, j in items]) for label, items in groups.items()
                }
            pending = [
                (label, item, vectors[label][n])
                for label, items in groups.items()
                for n, item in enumerate(items)
            ]
            for k, (label, (i, job), vector) in enumerate(pending):
                try:
                    with callback_scope(self.cap.value, self.env.payloads[i]):
                        self.ctx.gallery.post_text_embedding(job.request_id, vector, label)
                    self._delivered(i, job.request_id)
                    JOBS.labels("text", label, "done").inc()
                except Exception as exc:
                    self._failed(i, exc, remaining=[j for _, (j, _), _ in pending[k:]])
        except _Stop:
            pass
        return self._finish([p.get("request_id") for p in self.env.payloads], time.perf_counter() - started)

    # -- outcomes -----------------------------------------------------------------------------------
    def _delivered(self, index: int, item_id: Any) -> None:
        self.done += 1
        self.delivered_ids.append(item_id)
        settled.mark(self.job, index)

    def _failed(self, index: int, exc: Exception, remaining: list[int]) -> None:
        """Carry out the policy for item `index`; `remaining` are the items an outage defers with it."""
        outcome = decide(exc)
        if outcome is Outcome.RETRY:
            raise exc
        if outcome is Outcome.DEAD_LETTER:
            self._dead_letter(index, exc)
        elif outcome is Outcome.DEFER and self._gallery_answers():
            self._isolate(index, exc)
        else:
            self._defer_rest(remaining, exc)
            raise _Stop

    def _dead_letter(self, index: int, exc: BaseException) -> None:
        payload = self.env.payloads[index]
        self.failed += 1
        dead_letter(self.ctx.connection, self.env, payload, exc, self.attempt, self.ctx.name)
        report_failed(self.ctx.gallery, self.cap, payload, exc, self.models)
        gallery_health.forget_failing(self.ctx.connection, self.cap.value, self.env.item_id(payload))
        settled.mark(self.job, index)

    def _gallery_answers(self) -> bool:
        try:
            self.ctx.gallery.healthz()
        except Exception:
            return False
        return True

    def _isolate(self, index: int, exc: BaseException) -> None:
        """The gallery answers but not for this item: move it to the back, or give up after the bound."""
        conn, item = self.ctx.connection, self.env.item_id(self.env.payloads[index])
        limit = self.ctx.settings.worker.gallery_reject_after_s
        since = gallery_health.failing_since(conn, self.cap.value, item, limit)
        if time.time() - since >= limit and gallery_health.others_delivered_since(conn, since):
            reason = GalleryRejectedRepeatedly(
                f"the gallery kept failing this item for {time.time() - since:.0f}s "
                f"(MINDSIGHT_GALLERY_REJECT_AFTER_S={limit}) while accepting others; last: {exc}"
            )
            self._dead_letter(index, reason)
            return
        self._requeue([index], at_front=False)
        self.last_deferral = exc
        log.warning(
            "%s %s: the gallery answers but failed this item (%s); moved to the back",
            self.cap.value,
            item,
            exc,
        )

    def _defer_rest(self, indexes: list[int], exc: BaseException) -> None:
        """Outage or refused token: the undelivered items go back to the front; the worker pauses."""
        self._requeue(indexes, at_front=True)
        self.last_deferral = exc
        delay = self.ctx.pause.defer(exc)
        gallery_health.record_trouble(self.ctx.connection, exc, len(indexes), self.ctx.name)
        if isinstance(exc, GalleryAuthError):
            log.error(
                "GALLERY REJECTED OUR TOKEN: %s. Fix PROCESSING_INTERNAL_TOKEN; %d job(s) kept, "
                "pausing %.0fs",
                exc,
                len(indexes),
                delay,
            )
        else:
            log.warning("gallery unavailable (%s); %d job(s) kept, pausing %.1fs", exc, len(indexes), delay)

    def _requeue(self, indexes: list[int], at_front: bool) -> None:
        """Queue `indexes` as a new job with this attempt not spent; they are settled for this job."""
        payloads = [self.env.payloads[i] for i in indexes]
        with self.ctx.connection.pipeline() as pipe:
            self.ctx.dispatcher.add(
                pipe,
                self.cap,
                payloads,
                policy=self.env.policy,
                attempts_before=self.attempt - 1,
                at_front=at_front,
            )
            pipe.execute()
        for i in indexes:
            settled.mark(self.job, i)
        self.deferred += len(indexes)
        JOBS.labels(self.cap.value, "-", "deferred").inc(len(indexes))

    def _finish(self, ids: list[Any], seconds: float) -> dict[str, int]:
        if self.done:
            self.ctx.pause.clear()
            gallery_health.delivered(self.ctx.connection, self.cap.value, self.delivered_ids)
        elif self.last_deferral is not None and self.ctx.pause.remaining() <= 0:
            # Every item was moved to the back: the gallery answers its health probe but takes nothing.
            self.ctx.pause.defer(self.last_deferral)
            gallery_health.record_trouble(
                self.ctx.connection, self.last_deferral, self.deferred, self.ctx.name
            )
        log.info(
            "%s done: ids=%s delivered=%d failed=%d deferred=%d in %.3fs",
            self.cap.value,
            ids,
            self.done,
            self.failed,
            self.deferred,
            seconds,
            extra={
                "capability": self.cap.value,
                "request_ids" if self.cap is Capability.TEXT else "photo_ids": ids,
                "delivered": self.done,
                "failed": self.failed,
                "deferred": self.deferred,
                "seconds": round(seconds, 3),
            },
        )
        return {"done": self.done, "failed": self.failed, "deferred": self.deferred}
