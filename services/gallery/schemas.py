"""Request bodies of the gallery API; unknown fields are ignored. Callback bodies come from the contract."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

# The internal callback bodies are the shared contract, the very classes the workers send with.
from shared.gallery_contract import BBox, FaceIn, FacesIn, MlResultIn, TextQueryIn, Vector

__all__ = ["AlbumIn", "BBox", "FaceIn", "FacesIn", "FaultIn", "MlResultIn", "TextQueryIn", "VectorSearchIn"]


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


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
