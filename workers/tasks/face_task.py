"""Faces: boxes, landmarks and embeddings, in the pixel frame of the photo as the user sees it."""

from __future__ import annotations

from typing import Any

from PIL import Image

from shared.gallery_client import GalleryClient
from shared.gallery_contract import BBox, FaceIn
from shared.models.base import Face, FaceAnalyzer
from shared.payloads import Capability, PhotoJob
from workers.photo_decoder import DecodedPhoto
from workers.tasks.base import PhotoTask

FACE_DECODE_SIDE = 1280
"""Faces need more pixels than CLIP's 224: small faces in group photos vanish below this."""


class FaceTask(PhotoTask):
    """Detects and embeds faces; a photo without faces posts an empty list."""

    capability = Capability.FACE
    min_side = FACE_DECODE_SIDE

    def __init__(self, analyzer: FaceAnalyzer, model_label: str) -> None:
        self.analyzer = analyzer
        self.model_label = model_label

    def compute(self, images: list[Image.Image]) -> list[list[Face]]:
        return self.analyzer.predict(images)

    def post(self, gallery: GalleryClient, job: PhotoJob, photo: DecodedPhoto, result: Any) -> None:
        s = photo.scale  # boxes were found on a possibly DCT-scaled decode: map to full resolution
        faces = [
            FaceIn(
                embedding=face.embedding.tolist(),
                model=self.model_label,
                bbox=BBox(x1=face.bbox[0] * s, y1=face.bbox[1] * s, x2=face.bbox[2] * s, y2=face.bbox[3] * s),
                score=float(face.score),
                landmarks=[[x * s, y * s] for x, y in face.landmarks],
            )
            for face in result
        ]
        gallery.post_faces(job.photo_id, faces)

    def failure_models(self) -> list[str]:
        return [self.model_label]

    def describe(self) -> dict[str, Any]:
        info = self.analyzer.runtime_info
        return {self.model_label: {"runtime": info.runtime, "device": info.device, "dim": self.analyzer.dim}}
