"""Request and response bodies of the embedding API (the wire contract, also shown at /docs)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class EmbedTextIn(BaseModel):
    """POST /embed_text: `{"text": "a cat on the beach"}`; `model` is a label or source, default if absent."""

    model_config = ConfigDict(
        extra="ignore", json_schema_extra={"examples": [{"text": "a cat on the beach"}]}
    )

    text: str
    model: str | None = None


class EmbedTextOut(BaseModel):
    """One L2-normalised vector, the label of the model that made it, and its length."""

    embedding: list[float]
    model: str
    dim: int


class EmbedTextsIn(BaseModel):
    """POST /embed_texts: several texts embedded by one model in one batch."""

    model_config = ConfigDict(extra="ignore")

    texts: list[str] = Field(description="At most EMBED_API_MAX_BATCH non-empty texts.")
    model: str | None = None


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
