"""Idempotency keys of the gallery callbacks: the same key on every retry and redelivery of one result.

A key is derived from the item (photo or request id), the capability, the model label, the outcome
(`done` / `failed`) and a digest of the job payload exactly as the backend queued it. A redelivered job
(worker killed, batch split, dead letter requeued) carries the same payload, so its callbacks carry the
same keys and a gallery that honours them stores each result once. A new job for the same photo differs
in its payload only if the backend (or `mindsight backfill`, which stamps its run id) makes it differ:
docs/contract.md says so.

The job being delivered is bound with `callback_scope` around the task's posts; GalleryClient reads it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

HEADER = "Idempotency-Key"
"""The request header (the IETF httpapi draft's name), optional for backends to honour."""


@dataclass(frozen=True)
class CallbackScope:
    """The job whose results are being posted: its capability and payload digest."""

    capability: str
    digest: str

    def key(self, item_id: object, model: str, status: str) -> str:
        """The key of one callback: ASCII, a readable prefix and 64 hex digits."""
        material = "\x1f".join((str(item_id), self.capability, model, status, self.digest))
        digest = hashlib.sha256(material.encode("utf-8", "backslashreplace")).hexdigest()
        return f"ms1-{self.capability}-{digest}"


_SCOPE: ContextVar[CallbackScope | None] = ContextVar("mindsight_callback_scope", default=None)


def job_digest(payload: Mapping[str, Any]) -> str:
    """A digest of a job payload that does not depend on key order or whitespace."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


@contextlib.contextmanager
def callback_scope(capability: str, payload: Mapping[str, Any]) -> Iterator[CallbackScope]:
    """Bind the job whose callbacks are about to be posted (nested scopes restore the outer one)."""
    scope = CallbackScope(capability, job_digest(payload))
    token = _SCOPE.set(scope)
    try:
        yield scope
    finally:
        _SCOPE.reset(token)


def current_key(item_id: object, model: str, status: str) -> str | None:
    """The key for a callback posted now, or None outside a job (CLI tools post none)."""
    scope = _SCOPE.get()
    return scope.key(item_id, model, status) if scope is not None else None
