"""One loaded CLIP model shared by an image embedder and a text embedder.

A `ClipBackbone` owns the weights, the image transform and the tokenizer; each step is a separate method
(`preprocess`, `tokenize`, `encode_pixels`, `encode_tokens`) so another runtime (ONNX) can reuse the
numpy preprocessing and tokenization and swap only the forward passes.
"""

from __future__ import annotations

import gc
import logging
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from shared.models.base import ImageEmbedder, LoadOnce, RuntimeInfo, TextEmbedder
from shared.models.clip.preprocess import ClipImageTransform, preprocess_images

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TokenBatch:
    """Token ids padded to the context length, and how many leading positions each row needs."""

    ids: np.ndarray
    """int64 [batch, context]."""
    lengths: np.ndarray
    """int64 [batch]: positions up to and including the end-of-text token (the pooled one)."""
    truncated: dict[int, int] = field(default_factory=dict)
    """Rows cut to the context length -> how many tokens the model's tokenizer made of the whole text."""

    @property
    def needed(self) -> int:
        """Positions the text tower must run: later ones cannot reach any pooled token (causal mask)."""
        return int(self.lengths.max()) if len(self.lengths) else 0


class ClipBackbone(LoadOnce):
    """Weights, image transform and tokenizer of one CLIP model; loaded once, thread-safe to load."""

    family: str
    runtime: str = "torch"

    def __init__(self, source: str, device: str, *, max_tokens: int = 77) -> None:
        self.source = source
        self.device = device
        self.max_tokens = max_tokens
        self.dim = 0
        self.image_size = 0
        self.context_length = 0
        self.transform: ClipImageTransform | None = None
        self.image_tower_dropped = False
        super().__init__()

    def drop_image_tower(self) -> None:
        """Free the image tower's weights in a process that only embeds texts (the text worker, the
        embed API); `encode_pixels` raises from then on. Torch backends override `_drop_image_tower`;
        ONNX opens each tower's session only when asked (`eager`), so it has nothing to free."""
        self.load()
        if not self.image_tower_dropped:
            self._drop_image_tower()
            self.image_tower_dropped = True
            gc.collect()

    def _drop_image_tower(self) -> None:
        """Release whatever holds the image tower's weights (a no-op where nothing does)."""

    def _require_image_tower(self) -> None:
        if self.image_tower_dropped:
            raise RuntimeError(f"{self.source}: loaded for text only, its image tower was freed")

    def preprocess(self, images: Sequence[Image.Image]) -> np.ndarray:
        """RGB images -> float32 [N, 3, H, W] model input."""
        if self.transform is None:
            raise RuntimeError(f"{type(self).__name__} used before load()")
        return preprocess_images(images, self.transform)

    @property
    def runtime_info(self) -> RuntimeInfo:
        """Runtime and device this backbone computes on."""
        return RuntimeInfo(
            runtime=self.runtime,
            device=self.device,
            extra={"family": self.family, "source": self.source, "dim": self.dim},
        )

    @abstractmethod
    def tokenize(self, texts: Sequence[str]) -> TokenBatch:
        """Texts -> token ids, truncated (never refused) at the context length."""

    @abstractmethod
    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """Preprocessed [N, 3, H, W] -> L2-normalised float32 [N, dim]."""

    @abstractmethod
    def encode_tokens(self, tokens: TokenBatch) -> np.ndarray:
        """Token batch -> L2-normalised float32 [N, dim]."""


class ClipImageEmbedder(ImageEmbedder):
    """The image tower of a `ClipBackbone`."""

    def __init__(self, backbone: ClipBackbone) -> None:
        super().__init__()
        self.backbone = backbone

    def _load(self) -> None:
        self.backbone.load()
        self.dim = self.backbone.dim
        self.image_size = self.backbone.image_size

    def _predict(self, batch: list[Image.Image]) -> list[np.ndarray]:
        return list(self.backbone.encode_pixels(self.backbone.preprocess(batch)))

    @property
    def runtime_info(self) -> RuntimeInfo:
        return self.backbone.runtime_info


class ClipTextEmbedder(TextEmbedder):
    """The text tower of a `ClipBackbone`."""

    def __init__(self, backbone: ClipBackbone) -> None:
        super().__init__()
        self.backbone = backbone

    def _load(self) -> None:
        self.backbone.load()
        self.dim = self.backbone.dim

    def _predict(self, batch: list[str]) -> list[np.ndarray]:
        bad = [type(t).__name__ for t in batch if not isinstance(t, str)]
        if bad:
            raise TypeError(f"text embedder takes strings, got {', '.join(sorted(set(bad)))}")
        tokens = self.backbone.tokenize(batch)
        for row, count in tokens.truncated.items():
            # An ordinary outcome for long captions, never an error: the model reads the first tokens only.
            log.info(  # sizes only: the text itself is the user's and stays out of the logs
                "text truncated to the %d-token context of %s: it has %d tokens (%d characters)",
                self.backbone.context_length,
                self.backbone.source,
                count,
                len(batch[row]),
            )
        return list(self.backbone.encode_tokens(tokens))

    @property
    def runtime_info(self) -> RuntimeInfo:
        return self.backbone.runtime_info
