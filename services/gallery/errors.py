"""What the gallery's store refuses, each mapped to one HTTP status by `app.ERROR_STATUS`."""

from __future__ import annotations


class GalleryStoreError(Exception):
    """Base of the errors below."""


class PhotoNotFound(GalleryStoreError, LookupError):
    """No photo with that id (for this user, where a user is involved)."""


class DimensionMismatch(GalleryStoreError, ValueError):
    """A query or new vector whose length differs from the vectors already stored for its model."""


class ZeroVector(GalleryStoreError, ValueError):
    """A query of all zeros: cosine distance is undefined."""


class BadUpload(GalleryStoreError, ValueError):
    """A file the gallery refuses to store (type, size, name)."""
