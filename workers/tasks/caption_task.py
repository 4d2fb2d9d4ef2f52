"""Captions (BLIP by default), each embedded with the first CLIP model's text tower."""

from __future__ import annotations

import logging
from typing import Any

from PIL import Image

from shared.gallery_client import GalleryClient
from shared.gallery_contract import MlResultIn
from shared.models.base import Captioner
from shared.models.clip.registry import ClipModel
from shared.payloads import Capability, PhotoJob
from workers.photo_decoder import DecodedPhoto
from workers.tasks.base import PhotoTask

log = logging.getLogger(__name__)

CAPTION_DECODE_SIDE = 384
"""BLIP-base sees 384x384; decoding larger only costs time."""


class CaptionTask(PhotoTask):
    """Captions a batch, embeds the non-empty captions in one text batch, posts one callback each."""

    capability = Capability.CAPTION
    min_side = CAPTION_DECODE_SIDE

    def __init__(self, captioner: Captioner, clip: ClipModel, caption_model: str) -> None:
        self.captioner = captioner
        self.clip = clip
        self.caption_model = caption_model

    def compute(self, images: list[Image.Image]) -> list[tuple[str, list[float] | None]]:
        captions = [c.strip() for c in self.captioner.predict(images)]
        wanted = [c for c in captions if c]
        vectors = iter(self.clip.text.predict(wanted)) if wanted else iter(())
        return [(c, next(vectors).tolist() if c else None) for c in captions]

    def post(self, gallery: GalleryClient, job: PhotoJob, photo: DecodedPhoto, result: Any) -> None:
        caption, vector = result
        if not caption or vector is None:
            log.warning("photo %s: the captioner produced an empty caption; nothing posted", job.photo_id)
            return
        body = MlResultIn(
            model=self.clip.label,
            modality="caption",
            embedding=vector,
            caption=caption,
            ml_result={
                "source": "mindsight-ml",
                "model_name": self.clip.source,
                "caption_model": self.caption_model,
                "device": self.clip.runtime_info.device,
            },
            processing_status="done",
        )
        gallery.post_ml_result(job.photo_id, body)

    def failure_models(self) -> list[str]:
        return [self.clip.label]

    def describe(self) -> dict[str, Any]:
        info = self.captioner.runtime_info
        return {
            "captioner": {
                "source": self.caption_model,
                "runtime": info.runtime,
                "device": info.device,
                "precision": info.precision,
            },
            "text_model": {"label": self.clip.label, "source": self.clip.source},
        }
