"""The RQ job functions: decode, predict, post a batch; dead-letter what can never succeed.

The error policy in one place (see shared/errors.py):
- PermanentError for one photo/text (bad payload, unsafe path, unreadable image, unknown model, 4xx from
  the gallery): that item goes to the dead-letter queue, with a best-effort "failed" callback; the rest of
  the batch goes on.
- GalleryUnavailable / GalleryAuthError: nothing is the job's fault. The items not yet delivered are put
  back at the front of the queue with their attempt count unchanged and the worker pauses (backoff), so
  a gallery outage or a wrong token never drains the queue into the dead-letter queue.
- Anything else (model/runtime error, timeout) propagates to RQ: retried with backoff, and failed
  batches are split (workers.failure).
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from typing import Any

from rq import get_current_job

from shared.dead_letter import DeadLetter
from shared.errors import (
    GalleryAuthError,
    GalleryUnavailable,
    PermanentError,
    describe,
)
from shared.metrics import BATCH_SIZE, JOBS, STAGE_SECONDS
from shared.payloads import Capability, PhotoJob, TextJob, validate_photo_job, validate_text_job
from workers import runtime
from workers.dispatch import JobPolicy, attempt_number
from workers.photo_decoder import DecodedPhoto
from workers.runtime import WorkerContext

log = logging.getLogger(__name__)
_WAIT_OUT = (GalleryUnavailable, GalleryAuthError)


def _policy(ctx: WorkerContext, capability: Capability) -> tuple[JobPolicy, int]:
    job = get_current_job()
    if job is None or "dlq" not in job.meta:
        return ctx.dispatcher.policy_for(capability), 1
    return JobPolicy.from_meta(job.meta), attempt_number(job)


def run_photo_batch(capability: str, payloads: list[dict[str, Any]]) -> dict[str, int]:
    """RQ entry point for the photo capabilities (clip, caption, face)."""
    ctx = runtime.current()
    cap = Capability(capability)
    task = ctx.photo_tasks[cap]
    policy, attempts = _policy(ctx, cap)
    BATCH_SIZE.labels(cap.value).observe(len(payloads))
    started = time.perf_counter()

    decoded: list[tuple[dict[str, Any], PhotoJob, DecodedPhoto]] = []
    failed = 0
    with STAGE_SECONDS.labels(cap.value, "decode").time():
        for payload in payloads:
            try:
                job = validate_photo_job(payload)
                decoded.append((payload, job, ctx.decoder.load(job.path, task.min_side)))
            except PermanentError as exc:
                failed += 1
                _dead_letter_photo(ctx, cap, policy, payload, exc, attempts, task.failure_models())

    if decoded:
        with STAGE_SECONDS.labels(cap.value, "inference").time():
            results = task.compute([photo.image for _, _, photo in decoded])
    else:
        results = []

    done = 0
    with STAGE_SECONDS.labels(cap.value, "callback").time():
        for i, ((payload, job, photo), result) in enumerate(zip(decoded, results, strict=True)):
            try:
                task.post(ctx.gallery, job, photo, result)
                done += 1
            except _WAIT_OUT as exc:
                _defer(ctx, cap, policy, [p for p, _, _ in decoded[i:]], exc, attempts)
                return {"done": done, "failed": failed, "deferred": len(decoded) - i}
            except PermanentError as exc:
                failed += 1
                _dead_letter_photo(ctx, cap, policy, payload, exc, attempts, task.failure_models())
    ctx.pause.clear()
    for label in task.failure_models() or [cap.value]:
        JOBS.labels(cap.value, label, "done").inc(done)
    ids = [p.get("photo_id") for p in payloads]
    seconds = round(time.perf_counter() - started, 3)
    log.info(
        "%s done: photos=%s delivered=%d failed=%d in %.3fs",
        cap.value,
        ids,
        done,
        failed,
        seconds,
        extra={
            "capability": cap.value,
            "photo_ids": ids,
            "delivered": done,
            "failed": failed,
            "seconds": seconds,
        },
    )
    return {"done": done, "failed": failed, "deferred": 0}


def run_text_batch(payloads: list[dict[str, Any]]) -> dict[str, int]:
    """RQ entry point for text-embedding jobs."""
    ctx = runtime.current()
    task = ctx.text_task
    if task is None:
        raise RuntimeError("this worker does not serve the text queue")
    policy, attempts = _policy(ctx, Capability.TEXT)
    groups: dict[str, list[tuple[dict[str, Any], TextJob]]] = defaultdict(list)
    failed = 0
    for payload in payloads:
        try:
            job = validate_text_job(payload)
            groups[task.resolve(job)].append((payload, job))
        except PermanentError as exc:
            failed += 1
            _dead_letter(ctx, Capability.TEXT, policy, payload, exc, attempts)

    done = 0
    pending = [(label, item) for label, items in groups.items() for item in items]
    with STAGE_SECONDS.labels("text", "inference").time():
        vectors = {
            label: task.embed(label, [job.query for _, job in items]) for label, items in groups.items()
        }
    offsets: dict[str, int] = defaultdict(int)
    for i, (label, (payload, job)) in enumerate(pending):
        vector = vectors[label][offsets[label]]
        offsets[label] += 1
        try:
            ctx.gallery.post_text_embedding(job.request_id, vector, label)
            done += 1
            JOBS.labels("text", label, "done").inc()
        except _WAIT_OUT as exc:
            _defer(ctx, Capability.TEXT, policy, [p for _, (p, _) in pending[i:]], exc, attempts)
            return {"done": done, "failed": failed, "deferred": len(pending) - i}
        except PermanentError as exc:
            failed += 1
            _dead_letter(ctx, Capability.TEXT, policy, payload, exc, attempts)
    ctx.pause.clear()
    ids = [p.get("request_id") for p in payloads]
    log.info(
        "text done: requests=%s delivered=%d failed=%d",
        ids,
        done,
        failed,
        extra={"capability": "text", "request_ids": ids, "delivered": done, "failed": failed},
    )
    return {"done": done, "failed": failed, "deferred": 0}


def _defer(
    ctx: WorkerContext,
    cap: Capability,
    policy: JobPolicy,
    payloads: list[dict[str, Any]],
    exc: BaseException,
    attempts: int,
) -> None:
    """Put undelivered items back at the front, unchanged attempts, and pause this worker."""
    with ctx.connection.pipeline() as pipe:
        ctx.dispatcher.add(pipe, cap, payloads, policy=policy, attempts_before=attempts - 1, at_front=True)
        pipe.execute()
    delay = ctx.pause.defer(exc)
    JOBS.labels(cap.value, "-", "deferred").inc(len(payloads))
    if isinstance(exc, GalleryAuthError):
        log.error(
            "GALLERY REJECTED OUR TOKEN: %s. Fix PROCESSING_INTERNAL_TOKEN; %d job(s) kept, pausing %.0fs",
            exc,
            len(payloads),
            delay,
        )
    else:
        log.warning("gallery unavailable (%s); %d job(s) kept, pausing %.1fs", exc, len(payloads), delay)


def _dead_letter(
    ctx: WorkerContext,
    cap: Capability,
    policy: JobPolicy,
    payload: dict[str, Any],
    exc: BaseException,
    attempts: int,
) -> None:
    letter = DeadLetter.from_exception(
        exc,
        capability=cap.value,
        payload=payload,
        attempts=attempts,
        worker=ctx.name,
        source_queue=policy.source_queue,
    )
    ctx.dlq_for(policy.dlq_key).push(letter)
    JOBS.labels(cap.value, "-", "failed").inc()
    error_type, message = describe(exc)
    ref = payload.get("photo_id", payload.get("request_id"))
    log.warning(
        "%s dead-lettered: id=%s %s: %s (attempt %d)",
        cap.value,
        ref,
        error_type,
        message,
        attempts,
        extra={"capability": cap.value, "item_id": ref, "error_type": error_type, "attempts": attempts},
    )


def _dead_letter_photo(
    ctx: WorkerContext,
    cap: Capability,
    policy: JobPolicy,
    payload: dict[str, Any],
    exc: BaseException,
    attempts: int,
    models: list[str],
) -> None:
    """Dead-letter one photo and tell the gallery (best effort) so it does not wait forever."""
    _dead_letter(ctx, cap, policy, payload, exc, attempts)
    post_failure(ctx, cap, payload, exc, models)


def post_failure(
    ctx: WorkerContext, cap: Capability, payload: dict[str, Any], exc: BaseException, models: list[str]
) -> None:
    """Best-effort `processing_status: failed` callback for a photo that will not be processed."""
    photo_id = payload.get("photo_id")
    if not isinstance(photo_id, int):
        return
    error_type, message = describe(exc)
    modality = "caption" if cap is Capability.CAPTION else ("face" if cap is Capability.FACE else "image")
    for model in models or [cap.value]:
        body = {
            "model": model,
            "modality": modality,
            "embedding": [],
            "processing_status": "failed",
            "error": f"{cap.value}: {error_type}: {message}"[:1000],
            "ml_result": {"source": "mindsight-ml", "capability": cap.value, "error_type": error_type},
        }
        try:
            ctx.gallery.post_ml_result(photo_id, body)
        except Exception as post_exc:  # best effort: the dead letter is the record
            log.info("could not post failure of photo %s: %s", photo_id, post_exc)
