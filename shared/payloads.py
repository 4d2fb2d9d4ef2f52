"""Queue payloads of the wire contract (docs/contract.md) and the capabilities they fan out to."""

from __future__ import annotations

import enum
import json
import logging
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    ValidationError,
)

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


MAX_ID = 2**63 - 1
"""Ids are stored by the gallery as signed 64-bit integers; a larger one cannot be delivered (SQLite
overflow: the gallery answers 500 forever), so it is refused here, before any work is done."""

MAX_TASKS = 64
"""A photo job names a handful of tasks; a longer list is a broken or hostile producer."""


def _clean_text(value: str) -> str:
    # A lone surrogate (a valid JSON escape) cannot be encoded as UTF-8: it would fail later, in the
    # model, the callback or the dead letter. NUL ends C strings and paths. Neither is ever meant.
    if "\x00" in value:
        raise ValueError("contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"contains a lone surrogate at position {exc.start}") from None
    return value


Id = Annotated[StrictInt, Field(ge=1, le=MAX_ID)]
"""A photo, user or request id: an int (bool and float refused) the gallery can store."""

Text = Annotated[StrictStr, AfterValidator(_clean_text)]
"""A string that encodes as UTF-8 and holds no NUL."""


def _clean_or_none(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    try:
        return _clean_text(value)
    except ValueError:
        return None


def _optional_text(value: Any) -> str | None:
    # Optional fields added after the contract was fixed: a backend may already send a field of that
    # name with another meaning, and such a payload must keep working as before, so a value of the wrong
    # shape means "absent", never a refused job.
    return _clean_or_none(value)


def _optional_labels(value: Any) -> list[str] | None:
    if not isinstance(value, list) or not value or len(value) > MAX_TASKS:
        return None
    labels = [_clean_or_none(v) for v in value]
    return None if any(label is None for label in labels) else [str(label) for label in labels]


def requested_models(payload: Any) -> list[str] | None:
    """The CLIP labels a raw photo payload asks for (`models`), or None: every label."""
    return _optional_labels(payload.get("models")) if isinstance(payload, dict) else None


OptionalText = Annotated[str | None, BeforeValidator(_optional_text)]
"""An optional string field; anything but a clean string reads as absent."""

OptionalLabels = Annotated[list[str] | None, BeforeValidator(_optional_labels)]
"""An optional non-empty list of clean strings; anything else reads as absent."""


class PhotoJob(BaseModel):
    """`{"photo_id", "user_id", "path", "tasks"}` as pushed on REDIS_QUEUE_NAME; extra fields ignored.

    Optional: `priority` (`"bulk"` puts the job on the bulk lane, shared.lanes) and `models` (the CLIP
    labels to compute; absent means every configured label)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    photo_id: Id
    user_id: Id
    path: Text
    tasks: Annotated[list[Text], Field(max_length=MAX_TASKS)]
    priority: OptionalText = None
    models: OptionalLabels = None

    def capabilities(self, caption_enabled: bool) -> list[Capability]:
        """Capabilities this job asks for, in a stable order; `clip` implies captioning when enabled,
        unless the job names its CLIP `models` (a re-embedding: only those labels are computed)."""
        wanted: set[Capability] = set()
        for name in self.tasks:
            cap = TASK_NAMES.get(name.strip().lower())
            if cap is None:
                log.debug("photo %s: task %r belongs to the backend, ignored", self.photo_id, name)
                continue
            wanted.add(cap)
        if Capability.CLIP in wanted and caption_enabled and self.models is None:
            wanted.add(Capability.CAPTION)
        if not caption_enabled:
            wanted.discard(Capability.CAPTION)
        return [c for c in Capability if c in wanted]


class TextJob(BaseModel):
    """`{"type": "text_embed", "request_id", "query", "model"?}` as pushed on TEXT_EMBED_QUEUE_NAME."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    type: Literal["text_embed"] = "text_embed"
    request_id: Id
    query: Text
    model: Text | None = None


MAX_NESTING = 32
"""Deepest bracket nesting a payload may have. Ours nest two deep; json.loads recurses per level and raises
RecursionError (not ValueError) near 1000, so depth is checked on the raw bytes before parsing."""

_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_A_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")


def _nesting_over(raw: bytes, limit: int) -> bool:
    """Whether the JSON text `raw` nests brackets deeper than `limit` (brackets inside strings ignored)."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False  # the common case, decided without looking at strings
    depth = 0
    for byte in _JSON_STRING.sub(b"", raw).translate(None, _NOT_A_BRACKET):
        if byte in b"[{":
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def decode_payload(raw: bytes | str, max_bytes: int) -> dict[str, Any]:
    """The wire bytes as a JSON object, bounded in size and depth, or BadPayload (nothing else escapes)."""
    data_bytes = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    if len(data_bytes) > max_bytes:
        raise BadPayload(f"payload is {len(data_bytes)} bytes, over the {max_bytes}-byte limit")
    if _nesting_over(data_bytes, MAX_NESTING):
        raise BadPayload(f"payload is nested deeper than {MAX_NESTING} levels")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
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
    return validate_photo_job(decode_payload(raw, max_bytes))


def parse_text_job(raw: bytes | str, max_bytes: int = 64 * 1024) -> TextJob:
    """Parse one text job from the wire or raise BadPayload."""
    return validate_text_job(decode_payload(raw, max_bytes))
