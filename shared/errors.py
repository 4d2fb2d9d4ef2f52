"""Named errors, split by what the delivery layer must do with them.

Permanent errors will fail the same way on every retry: they go straight to the dead-letter queue.
Transient errors are waited out with backoff. `GalleryAuthError` is its own kind: a wrong token is an
operator problem, so workers pause and keep the jobs rather than burning retries or dead-lettering.
The one place that maps these onto retry / dead-letter / defer / pause is the table in
`workers.delivery.policy` (queues); `services.embed_api.app` maps them onto HTTP statuses.
"""

from __future__ import annotations


class MindsightError(Exception):
    """Base class for every error this project raises on purpose."""


class ConfigError(MindsightError):
    """The configuration cannot work; raised at start-up so a process refuses to run."""


class PermanentError(MindsightError):
    """Retrying cannot help: the job goes to the dead-letter queue with this message."""


class BadPayload(PermanentError):
    """A queue payload that is not valid JSON, lacks a field, has a wrong type, or is oversized."""


class UnsafePath(PermanentError):
    """A photo path that resolves outside the configured upload roots."""


class ImageDecodeError(PermanentError):
    """The file is missing, truncated, not an image, or a decompression bomb."""


class UnknownModel(PermanentError):
    """A model label that is not configured in this process."""


class GalleryRejected(PermanentError):
    """The gallery answered 4xx (other than 401/403/429): the request itself is wrong, e.g. photo deleted."""


class GalleryRejectedRepeatedly(GalleryRejected):
    """The gallery kept failing one photo's callback (5xx, timeouts) while accepting others."""

    error_type = "gallery_rejected_repeatedly"


class TransientError(MindsightError):
    """Worth retrying later with backoff."""


class GalleryUnavailable(TransientError):
    """The gallery is down, slow, or answered 5xx/429. Waited out; never drains the queue into the DLQ."""


class GalleryAuthError(MindsightError):
    """The gallery refused our internal token (401/403). Operators must fix the token; jobs are kept."""


def describe(exc: BaseException) -> tuple[str, str]:
    """Return (error_type, message) for dead-letter entries and logs (a class may name its own type)."""
    error_type = getattr(type(exc), "error_type", None)
    return error_type if isinstance(error_type, str) else type(exc).__name__, str(exc) or repr(exc)
