"""The one way an item is dead-lettered: an entry through DeadLetterQueue.push, and a failed callback."""

from __future__ import annotations

import logging
from typing import Any

import redis
from redis.client import Pipeline

from shared.dead_letter import DeadLetter, DeadLetterQueue
from shared.errors import describe
from shared.gallery_client import GalleryClient
from shared.gallery_contract import failure_body
from shared.idempotency import callback_scope
from shared.metrics import JOBS
from shared.payloads import Capability, requested_models
from workers.delivery.envelope import JobEnvelope

log = logging.getLogger(__name__)


def dead_letter(
    connection: redis.Redis,
    envelope: JobEnvelope,
    payload: dict[str, Any],
    exc: BaseException,
    attempt: int,
    worker: str,
    pipe: Pipeline | None = None,
) -> DeadLetter:
    """Write one dead-letter entry for `payload` (on `pipe` when given: it commits with the caller's work)."""
    cap = envelope.capability
    letter = DeadLetter.from_exception(
        exc,
        capability=cap.value,
        payload=payload,
        attempts=attempt,
        worker=worker,
        source_queue=envelope.policy.source_queue,
    )
    DeadLetterQueue(connection, envelope.policy.dlq_key).push(letter, pipe)
    JOBS.labels(cap.value, "-", "failed").inc()
    ref = envelope.item_id(payload)
    log.warning(
        "%s dead-lettered: id=%s %s: %s (attempt %d)",
        cap.value,
        ref,
        letter.error_type,
        letter.error,
        attempt,
        extra={"capability": cap.value, "item_id": ref, "error_type": letter.error_type, "attempts": attempt},
    )
    return letter


def report_failed(
    gallery: GalleryClient | None,
    capability: Capability,
    payload: dict[str, Any],
    exc: BaseException,
    models: list[str],
) -> None:
    """Best-effort `processing_status: failed` callback, once per model label, for a dead-lettered photo."""
    photo_id = payload.get("photo_id")
    if gallery is None or capability is Capability.TEXT or type(photo_id) is not int:
        return
    error_type, message = describe(exc)
    if capability is Capability.CLIP and (asked := requested_models(payload)):
        models = asked  # a re-embedding job failed: only the labels it was computing failed
    for model in models or [capability.value]:
        body = failure_body(capability.value, model, error_type, message)
        try:
            with callback_scope(capability.value, payload):
                gallery.post_ml_result(photo_id, body)
        except Exception as post_exc:  # best effort: the dead letter is the record
            log.warning("could not post the failure of photo %s to the gallery: %s", photo_id, post_exc)
