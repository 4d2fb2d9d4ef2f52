"""THE policy table: what happens to an item (or a job) after each kind of error. Nothing else decides it."""

from __future__ import annotations

import enum

from shared.errors import GalleryAuthError, GalleryUnavailable, PermanentError


class Outcome(enum.StrEnum):
    """Where an item goes after an error."""

    RETRY = "retry"
    """RQ re-runs the job after the backoff; a failed multi-item batch is split into its unsettled items."""
    DEAD_LETTER = "dead_letter"
    """One dead-letter entry and one best-effort failed callback; the rest of the batch goes on."""
    DEFER = "defer"
    """Back to the front of the queue without spending an attempt; the worker backs off (gallery down)."""
    PAUSE = "pause"
    """Like DEFER with a longer pause and a loud log: an operator must act (the gallery refuses our token)."""


POLICY: tuple[tuple[type[BaseException], Outcome], ...] = (
    (GalleryAuthError, Outcome.PAUSE),
    (GalleryUnavailable, Outcome.DEFER),
    (PermanentError, Outcome.DEAD_LETTER),
)
"""First match wins (most specific first); anything not listed (model/runtime errors, timeouts, a worker
killed mid-job) is RETRY. Permanent: bad payload, unsafe or impossible path, unreadable image, unknown
model, a 4xx from the gallery, a photo the gallery keeps rejecting (gallery_rejected_repeatedly)."""


def decide(exc: BaseException) -> Outcome:
    """The outcome for `exc`, from POLICY."""
    for kind, outcome in POLICY:
        if isinstance(exc, kind):
            return outcome
    return Outcome.RETRY
