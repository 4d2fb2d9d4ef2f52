"""Request and response bodies of the embedding API (the wire contract, also shown at /docs)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError


def _unicode_text(value: str) -> str:
    """Refuse lone surrogates: JSON lets `"\\ud800"` through, but no tokenizer or encoder can take it."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise PydanticCustomError(
            "unicode_text",
            "not valid Unicode text: lone surrogate {char} at index {index}",
            {"char": ascii(value[exc.start])[1:-1], "index": exc.start},
        ) from None
    return value


UnicodeText = Annotated[str, AfterValidator(_unicode_text)]
"""A string that encodes to UTF-8: every text field of a request body is one."""


class EmbedTextIn(BaseModel):
    """POST /embed_text: `{"text": "a cat on the beach"}`; `model` is a label or source, default if absent."""

    model_config = ConfigDict(
        extra="ignore", json_schema_extra={"examples": [{"text": "a cat on the beach"}]}
    )

    text: UnicodeText
    model: UnicodeText | None = None


class EmbedTextOut(BaseModel):
    """One L2-normalised vector, the label of the model that made it, and its length."""

    embedding: list[float]
    model: str
    dim: int


class EmbedTextsIn(BaseModel):
    """POST /embed_texts: several texts embedded by one model in one batch."""

    model_config = ConfigDict(extra="ignore")

    texts: list[UnicodeText] = Field(description="At most EMBED_API_MAX_BATCH non-empty texts.")
    model: UnicodeText | None = None


class EmbedTextsOut(BaseModel):
    """One vector per text, in request order."""

    embeddings: list[list[float]]
    model: str
    dim: int


class ErrorOut(BaseModel):
    """Every 4xx/5xx body: a sentence for humans and a stable kind for programs."""

    error: str
    error_type: str


class ModelOut(BaseModel):
    """One served model as GET /models and GET /readyz describe it."""

    label: str
    source: str
    family: str
    dim: int
    default: bool
    runtime: str
    device: str
    precision: str
    loaded: bool
    extra: dict[str, Any] = Field(default_factory=dict)
