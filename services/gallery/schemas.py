"""Request bodies of the gallery API, as the wire contract defines them; unknown fields are ignored."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
Vector = Annotated[list[FiniteFloat], Field(max_length=8192)]
"""A JSON list of finite numbers; NaN/Infinity are refused (they would poison every distance)."""


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class MlResultIn(_Body):
    """POST /api/internal/photos/{id}/ml_result."""

    model: str = Field(min_length=1, max_length=200)
    modality: Literal["image", "caption"]
    embedding: Vector | None = None
    ml_result: dict[str, Any] | None = None
    processing_status: Literal["done", "failed"]
    error: str | None = Field(None, max_length=10_000)
    caption: str | None = Field(None, max_length=10_000)

    @model_validator(mode="after")
    def _done_has_vector(self) -> MlResultIn:
        if self.processing_status == "done" and not self.embedding:
            raise ValueError("processing_status 'done' needs a non-empty embedding")
        return self


class BBox(_Body):
    x1: FiniteFloat
    y1: FiniteFloat
    x2: FiniteFloat
    y2: FiniteFloat


class FaceIn(_Body):
    embedding: Vector = Field(min_length=1)
    model: str = Field(min_length=1, max_length=200)
    bbox: BBox
    score: FiniteFloat | None = None
    landmarks: list[Annotated[list[FiniteFloat], Field(min_length=2, max_length=3)]] | None = None


class FacesIn(_Body):
    """POST /api/internal/photos/{id}/faces: the photo's complete set of faces."""

    faces: list[FaceIn] = Field(max_length=1000)


class TextQueryIn(_Body):
    """POST /api/internal/text_queries/{request_id}."""

    embedding: Vector = Field(min_length=1)
    model: str = Field(min_length=1, max_length=200)


class AlbumIn(_Body):
    """POST /api/albums."""

    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
    description: str = Field("", max_length=10_000)
    photo_ids: list[int] = Field(default_factory=list, max_length=100_000)


class AlbumPhotosIn(_Body):
    """POST /api/albums/{album_id}/photos (optional in the contract)."""

    photo_ids: list[int] = Field(min_length=1, max_length=100_000)


class VectorSearchIn(_Body):
    """POST /api/search/vector."""

    embedding: Vector = Field(min_length=1)
    model: str = Field(min_length=1, max_length=200)
    modality: Literal["image", "caption"] = "image"
    limit: int = Field(20, ge=1, le=1000)


class FaultIn(_Body):
    """POST /_dev/faults: what the next internal callbacks should suffer."""

    status: int | None = Field(None, ge=400, le=599)
    count: int = Field(0, ge=0)
    delay_s: float = Field(0.0, ge=0.0, le=600.0)
    only: str | None = Field(None, max_length=200)
