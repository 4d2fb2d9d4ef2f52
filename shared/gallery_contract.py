"""The wire contract of the gallery's internal callbacks: one set of pydantic models for both sides.

The workers' GalleryClient builds these and the reference gallery validates requests with the very same
classes, so a body one side sends and the other refuses (a 422 in production) is a type error or a
validation error in the first test instead. docs/contract.md §4 describes the same bodies in prose.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
Vector = Annotated[list[FiniteFloat], Field(max_length=8192)]
"""A JSON list of finite numbers; NaN/Infinity are refused (they would poison every distance)."""

Modality = Literal["image", "caption", "face"]
"""`image` and `caption` carry embeddings; `face` appears only on failure bodies (faces go to /faces)."""

FAILURE_MODALITY: dict[str, Modality] = {"clip": "image", "caption": "caption", "face": "face"}
"""The modality a failed capability reports under."""


def _utf8(text: object) -> object:
    """Text that always encodes: a lone surrogate becomes its escape instead of breaking the request."""
    if not isinstance(text, str):
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")

    def wire(self) -> dict[str, Any]:
        """The JSON body as sent: unset optional fields are left out, like the original runner's."""
        return self.model_dump(mode="json", exclude_none=True)


class MlResultIn(_Body):
    """POST /api/internal/photos/{id}/ml_result: an embedding (image, caption) or a failure (any)."""

    model: str = Field(min_length=1, max_length=200)
    modality: Modality
    embedding: Vector | None = None
    ml_result: dict[str, Any] | None = None
    processing_status: Literal["done", "failed"]
    error: str | None = Field(None, max_length=10_000)
    caption: str | None = Field(None, max_length=10_000)

    _text_utf8 = field_validator("error", "caption", "model", mode="before")(_utf8)

    @model_validator(mode="after")
    def _consistent(self) -> MlResultIn:
        if self.processing_status == "done" and not self.embedding:
            raise ValueError("processing_status 'done' needs a non-empty embedding")
        if self.modality == "face" and self.processing_status != "failed":
            raise ValueError("modality 'face' is only for failures; faces are posted to /faces")
        return self


class BBox(_Body):
    x1: FiniteFloat
    y1: FiniteFloat
    x2: FiniteFloat
    y2: FiniteFloat


class FaceIn(_Body):
    """One face: embedding, box and landmarks in pixels of the displayed full-resolution photo."""

    embedding: Vector = Field(min_length=1)
    model: str = Field(min_length=1, max_length=200)
    bbox: BBox
    score: FiniteFloat | None = None
    landmarks: list[Annotated[list[FiniteFloat], Field(min_length=2, max_length=3)]] | None = None


class FacesIn(_Body):
    """POST /api/internal/photos/{id}/faces: the photo's complete set of faces (empty: none found)."""

    faces: list[FaceIn] = Field(max_length=1000)


class TextQueryIn(_Body):
    """POST /api/internal/text_queries/{request_id}."""

    embedding: Vector = Field(min_length=1)
    model: str = Field(min_length=1, max_length=200)


def failure_body(capability: str, model: str, error_type: str, message: str) -> MlResultIn:
    """The failed-status callback of a dead-lettered photo capability, for one model label."""
    return MlResultIn(
        model=model,
        modality=FAILURE_MODALITY.get(capability, "image"),
        embedding=[],
        processing_status="failed",
        error=f"{capability}: {error_type}: {message}"[:1000],
        ml_result={"source": "mindsight-ml", "capability": capability, "error_type": error_type},
    )
