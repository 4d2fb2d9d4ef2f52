"""CLIP image embeddings: every configured label for every photo, one callback per label."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from PIL import Image

from shared.errors import UnknownModel
from shared.gallery_client import GalleryClient
from shared.gallery_contract import MlResultIn
from shared.models.clip.registry import ClipModel
from shared.payloads import Capability, PhotoJob
from workers.photo_decoder import DecodedPhoto
from workers.tasks.base import PhotoTask


class ClipTask(PhotoTask):
    """Embeds a batch of photos with each CLIP model."""

    capability = Capability.CLIP

    def __init__(self, models: Mapping[str, ClipModel]) -> None:
        self.models = dict(models)
        self.min_side = max(m.image.image_size for m in self.models.values())

    def compute(self, images: list[Image.Image]) -> list[dict[str, np.ndarray]]:
        per_label = {label: m.image.predict(images) for label, m in self.models.items()}
        return [{label: vecs[i] for label, vecs in per_label.items()} for i in range(len(images))]

    def check(self, job: PhotoJob) -> None:
        """A job's optional `models` must name configured labels only (UnknownModel lists the others)."""
        unknown = [label for label in job.models or [] if label not in self.models]
        if unknown:
            raise UnknownModel(
                f"CLIP label(s) {unknown} not configured here; labels on offer: {list(self.models)}"
            )

    def compute_jobs(self, jobs: list[PhotoJob], images: list[Image.Image]) -> list[dict[str, np.ndarray]]:
        """Each label embeds only the photos whose job wants it (`models`; absent: every label)."""
        results: list[dict[str, np.ndarray]] = [{} for _ in images]
        for label, model in self.models.items():
            wanted = [i for i, job in enumerate(jobs) if job.models is None or label in job.models]
            if not wanted:
                continue
            vectors = model.image.predict([images[i] for i in wanted])
            for i, vector in zip(wanted, vectors, strict=True):
                results[i][label] = vector
        return results

    def post(self, gallery: GalleryClient, job: PhotoJob, photo: DecodedPhoto, result: Any) -> None:
        for label, vector in result.items():
            model = self.models[label]
            body = MlResultIn(
                model=label,
                modality="image",
                embedding=vector.tolist(),
                ml_result={
                    "source": "mindsight-ml",
                    "model_name": model.source,
                    "device": model.runtime_info.device,
                    "runtime": model.runtime_info.runtime,
                    "dim": model.dim,
                },
                processing_status="done",
            )
            gallery.post_ml_result(job.photo_id, body)

    def failure_models(self) -> list[str]:
        return list(self.models)

    def describe(self) -> dict[str, Any]:
        return {label: _model_info(m) for label, m in self.models.items()}


def _model_info(model: ClipModel) -> dict[str, Any]:
    info = model.runtime_info
    return {
        "source": model.source,
        "family": str(model.family),
        "dim": model.dim,
        "runtime": info.runtime,
        "device": info.device,
        "precision": info.precision,
    }
