"""THE policy table: each error kind has exactly one outcome, and unknown errors are retried."""

from __future__ import annotations

import pytest
from rq.timeouts import JobTimeoutException

from shared.errors import (
    BadPayload,
    GalleryAuthError,
    GalleryRejected,
    GalleryRejectedRepeatedly,
    GalleryUnavailable,
    ImageDecodeError,
    UnknownModel,
    UnsafePath,
    describe,
)
from workers.delivery.policy import POLICY, Outcome, decide


@pytest.mark.parametrize(
    ("exc", "outcome"),
    [
        (BadPayload("x"), Outcome.DEAD_LETTER),
        (UnsafePath("x"), Outcome.DEAD_LETTER),
        (ImageDecodeError("x"), Outcome.DEAD_LETTER),
        (UnknownModel("x"), Outcome.DEAD_LETTER),
        (GalleryRejected("404"), Outcome.DEAD_LETTER),
        (GalleryRejectedRepeatedly("x"), Outcome.DEAD_LETTER),
        (GalleryUnavailable("503"), Outcome.DEFER),
        (GalleryAuthError("401"), Outcome.PAUSE),
        (JobTimeoutException("slow"), Outcome.RETRY),
        (RuntimeError("CUDA out of memory"), Outcome.RETRY),
        (MemoryError(), Outcome.RETRY),
    ],
)
def test_each_error_has_one_outcome(exc: BaseException, outcome: Outcome) -> None:
    assert decide(exc) is outcome


def test_no_row_is_shadowed_by_an_earlier_one() -> None:
    """First match wins, so a subclass listed after its base would never be reached."""
    for i, (kind, _) in enumerate(POLICY):
        assert not any(issubclass(kind, earlier) for earlier, _ in POLICY[:i]), kind


def test_the_poison_photo_reason_is_its_documented_name() -> None:
    assert describe(GalleryRejectedRepeatedly("kept failing")) == (
        "gallery_rejected_repeatedly",
        "kept failing",
    )
