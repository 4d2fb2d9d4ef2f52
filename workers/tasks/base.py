"""The two task shapes: photo tasks (batch of decoded photos) and text tasks."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from PIL import Image

from shared.gallery_client import GalleryClient
from shared.payloads import Capability, PhotoJob, TextJob
from workers.photo_decoder import DecodedPhoto


class PhotoTask(ABC):
    """Compute one capability for a batch of photos, then post each photo's result."""

    capability: Capability
    min_side: int | None = None
    """Shorter side the decoder must keep; JPEGs are DCT-scaled down to about this size."""

    @abstractmethod
    def compute(self, images: list[Image.Image]) -> list[Any]:
        """One result per image (raises only for model/runtime failures)."""

    def check(self, job: PhotoJob) -> None:
        """Refuse a job this task cannot do (a permanent error), before any work is spent on it."""
        return None  # most tasks can do every valid job

    def compute_jobs(self, jobs: list[PhotoJob], images: list[Image.Image]) -> list[Any]:
        """One result per (job, image); a task whose jobs can ask for less than everything overrides it."""
        return self.compute(images)

    @abstractmethod
    def post(self, gallery: GalleryClient, job: PhotoJob, photo: DecodedPhoto, result: Any) -> None:
        """Send one photo's result to the gallery."""

    def failure_models(self) -> list[str]:
        """Model labels a failed-status callback is posted under."""
        return []

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """Models and the runtime/device they really run on (logged at start-up, /readyz)."""


class TextTask(ABC):
    """Embed text queries with the CLIP text tower a job asks for."""

    @abstractmethod
    def resolve(self, job: TextJob) -> str:
        """The label that will embed this job; UnknownModel (naming the labels on offer) otherwise."""

    @abstractmethod
    def embed(self, label: str, texts: list[str]) -> list[list[float]]:
        """L2-normalised vectors, one per text."""

    @abstractmethod
    def describe(self) -> dict[str, Any]: ...
