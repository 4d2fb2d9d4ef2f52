"""Queue payloads of the wire contract (docs/contract.md) and the capabilities they fan out to."""

from __future__ import annotations

import enum
import json
import logging
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, StrictInt, StrictStr, ValidationError

from shared.errors import BadPayload

log = logging.getLogger(__name__)


class Capability(enum.StrEnum):
    """One kind of work, with its own RQ queue and worker."""

    CLIP = "clip"
    CAPTION = "caption"
    FACE = "face"
    TEXT = "text"


TASK_NAMES: dict[str, Capability] = {
    "clip": Capability.CLIP,
    "caption": Capability.CAPTION,
    "face": Capability.FACE,
    "faces": Capability.FACE,
}
"""Task names in photo jobs that belong to us. Anything else (`thumbnail`, ...) is the backend's."""


class PhotoJob(BaseModel):
    """`{"photo_id", "user_id", "path", "tasks"}` as pushed on REDIS_QUEUE_NAME; extra fields ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    photo_id: StrictInt
    user_id: StrictInt
    path: StrictStr
    tasks: list[StrictStr]

    def capabilities(self, caption_enabled: bool) -> list[Capability]:
        """Capabilities this job asks for, in a stable order; `clip` implies captioning when enabled."""
        wanted: set[Capability] = set()
        for name in self.tasks:
            cap = TASK_NAMES.get(name.strip().lower())
            if cap is None:
                log.debug("photo %s: task %r belongs to the backend, ignored", self.photo_id, name)
                continue
            wanted.add(cap)
        if Capability.CLIP in wanted and caption_enabled:
            wanted.add(Capability.CAPTION)
        if not caption_enabled:
            wanted.discard(Capability.CAPTION)
        return [c for c in Capability if c in wanted]


class TextJob(BaseModel):
    """`{"type": "text_embed", "request_id", "query", "model"?}` as pushed on TEXT_EMBED_QUEUE_NAME."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    type: Literal["text_embed"] = "text_embed"
    request_id: StrictInt
    query: StrictStr
    model: StrictStr | None = None


def _decode(raw: bytes | str, max_bytes: int) -> Any:
    size = len(raw.encode() if isinstance(raw, str) else raw)
    if size > max_bytes:
        raise BadPayload(f"payload is {size} bytes, over the {max_bytes}-byte limit")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadPayload(f"payload is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise BadPayload(f"payload must be a JSON object, got {type(data).__name__}")
    return data


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "payload"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


def validate_photo_job(data: Any) -> PhotoJob:
    """An already decoded photo job, validated; BadPayload saying exactly what is wrong."""
    try:
        job = PhotoJob.model_validate(data)
    except ValidationError as exc:
        raise BadPayload(f"invalid photo job: {_validation_message(exc)}") from exc
    if not job.path.strip():
        raise BadPayload("invalid photo job: path is empty")
    return job


def validate_text_job(data: Any) -> TextJob:
    """An already decoded text job, validated; BadPayload saying exactly what is wrong."""
    try:
        job = TextJob.model_validate(data)
    except ValidationError as exc:
        raise BadPayload(f"invalid text job: {_validation_message(exc)}") from exc
    if not job.query.strip():
        raise BadPayload("invalid text job: query is empty")
    return job


def parse_photo_job(raw: bytes | str, max_bytes: int = 64 * 1024) -> PhotoJob:
    """Parse one photo job from the wire or raise BadPayload."""
    return validate_photo_job(_decode(raw, max_bytes))


def parse_text_job(raw: bytes | str, max_bytes: int = 64 * 1024) -> TextJob:
    """Parse one text job from the wire or raise BadPayload."""
    return validate_text_job(_decode(raw, max_bytes))
