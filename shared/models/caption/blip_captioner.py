"""BLIP image captioning (transformers `BlipForConditionalGeneration`), one `generate` call per batch."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from transformers import BlipForConditionalGeneration, BlipProcessor

from shared.errors import ConfigError
from shared.models.base import Captioner, RuntimeInfo
from shared.models.store.source import hub_offline, parse_source
from shared.settings import CaptionSettings, ModelStoreSettings

log = logging.getLogger(__name__)

CAPTION_FIX = (
    "run `mindsight models download` to fetch it into MINDSIGHT_MODELS_DIR, or set CAPTION_MODEL_NAME to a "
    "local directory holding a BLIP model saved with save_pretrained"
)
"""How an operator fixes a caption model that cannot be found; ends every missing-model error."""


def resolve_caption_source(name: str, models_dir: Path) -> str:
    """A local directory for `name` (as given, or under MINDSIGHT_MODELS_DIR), else `name` as a hub id.

    `Salesforce/blip-image-captioning-base` thus finds `models/Salesforce/blip-image-captioning-base`
    after `mindsight models download`, and only falls back to the hub when nothing is on disk.
    """
    if not name.strip():
        raise ConfigError(f"CAPTION_MODEL_NAME is empty; {CAPTION_FIX}")
    parsed = parse_source(name, models_dir, "caption")
    if parsed.local is not None:
        return str(parsed.local)
    if parsed.family is None:
        raise ConfigError(
            f"caption model directory {parsed.raw!r} does not exist (looked in {parsed.target}); "
            f"{CAPTION_FIX}"
        )
    return parsed.raw


class BlipCaptioner(Captioner):
    """Images -> captions with BLIP; greedy by default (`num_beams=1`), so results are deterministic."""

    def __init__(
        self,
        source: str,
        *,
        device: str = "cpu",
        max_length: int = 64,
        num_beams: int = 1,
        local_files_only: bool = False,
    ) -> None:
        super().__init__()
        if max_length < 2:
            # The decoder's prompt ([DEC]) counts towards max_length: below 2 nothing can be generated.
            raise ConfigError(f"CAPTION_MAX_LENGTH must be at least 2, got {max_length}")
        if num_beams < 1:
            raise ConfigError(f"CAPTION_NUM_BEAMS must be at least 1, got {num_beams}")
        self.source = source
        self.device = device
        self.max_length = max_length
        self.num_beams = num_beams
        self.local_files_only = local_files_only
        self._model: Any = None
        self._processor: Any = None

    def _load(self) -> None:
        try:
            with hub_offline(self.local_files_only):
                processor = BlipProcessor.from_pretrained(self.source, local_files_only=self.local_files_only)
                model: Any = BlipForConditionalGeneration.from_pretrained(
                    self.source, local_files_only=self.local_files_only
                )
        except (OSError, ValueError) as exc:  # missing files, offline cache miss, bad repo id
            # transformers' messages run on for lines; their first sentence says what was missing.
            reason = (str(exc).strip() or repr(exc)).split(". ")[0].splitlines()[0][:300]
            mode = " (MINDSIGHT_OFFLINE: only local files and the HF cache were tried)"
            raise ConfigError(
                f"cannot load the BLIP caption model {self.source!r}{mode if self.local_files_only else ''}: "
                f"{type(exc).__name__}: {reason}; {CAPTION_FIX}"
            ) from exc
        self._processor = processor
        self._model = model.to(self.device).eval()
        log.info("caption model %s loaded on %s", self.source, self.device)

    def _predict(self, batch: list[Image.Image]) -> list[str]:
        pixels = self._processor(images=batch, return_tensors="pt")["pixel_values"].to(self.device)
        with torch.inference_mode():
            tokens = self._model.generate(
                pixel_values=pixels, max_length=self.max_length, num_beams=self.num_beams
            )
        captions = self._processor.batch_decode(tokens, skip_special_tokens=True)
        return [c.strip() for c in captions]

    @property
    def runtime_info(self) -> RuntimeInfo:
        return RuntimeInfo(
            runtime="torch",
            device=self.device,
            precision="fp32",
            extra={"source": self.source, "max_length": self.max_length, "num_beams": self.num_beams},
        )


def load_captioner(caption: CaptionSettings, store: ModelStoreSettings, device: str) -> Captioner:
    """Build the configured BLIP captioner on `device` and load it now, so a missing model fails start-up."""
    source = resolve_caption_source(caption.model_name, store.models_dir)
    captioner = BlipCaptioner(
        source,
        device=device,
        max_length=caption.max_length,
        num_beams=caption.num_beams,
        local_files_only=store.offline,
    )
    captioner.load()
    return captioner
