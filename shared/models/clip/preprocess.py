"""CLIP image preprocessing in PIL + numpy: RGB image -> float32 NCHW batch, no torch needed.

Both families resize with PIL (as the reference CLIPs were trained) then centre crop and normalise, so one
`ClipImageTransform` describes either; the families differ only in how the crop offset is rounded.
The ONNX backend reuses `preprocess_images` unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image

from shared.errors import ConfigError


@dataclass(frozen=True)
class ClipImageTransform:
    """Resize, centre crop and normalise parameters of one CLIP model's image input."""

    resize: int | tuple[int, int] | None
    """int: shorter side to this (aspect kept); (height, width): squash to exactly that; None: no resize."""
    crop: tuple[int, int] | None
    """(height, width) of the centre crop after resizing; None: no crop."""
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resample: Image.Resampling = Image.Resampling.BICUBIC
    crop_rounding: Literal["floor", "round"] = "floor"
    """transformers floors the crop offset; torchvision (open_clip) rounds it half to even."""
    rescale: float = 1 / 255

    @property
    def output_size(self) -> tuple[int, int]:
        """(height, width) of the tensor the model sees."""
        if self.crop is not None:
            return self.crop
        if isinstance(self.resize, tuple):
            return self.resize
        raise ConfigError("a CLIP transform without a crop must squash to a fixed (height, width)")

    @property
    def min_source_side(self) -> int:
        """Smallest shorter side a source image may be decoded at without losing model-input detail."""
        if isinstance(self.resize, int):
            return self.resize
        return max(self.resize or self.output_size)


def preprocess_images(images: Sequence[Image.Image], transform: ClipImageTransform) -> np.ndarray:
    """Images -> float32 array [N, 3, H, W], normalised as the model expects."""
    height, width = transform.output_size
    out = np.empty((len(images), 3, height, width), dtype=np.float32)
    scale = np.float32(transform.rescale)
    mean = np.asarray(transform.mean, dtype=np.float32)
    std = np.asarray(transform.std, dtype=np.float32)
    for i, image in enumerate(images):
        pixels = _crop(np.asarray(_resize(image, transform)), transform)
        normalised = (pixels.astype(np.float32) * scale - mean) / std
        out[i] = normalised.transpose(2, 0, 1)
    return out


def resized_size(width: int, height: int, shortest: int) -> tuple[int, int]:
    """(width, height) with the shorter side set to `shortest`, the longer truncated as torchvision does."""
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(shortest * long / short)
    return (shortest, new_long) if width <= height else (new_long, shortest)


def _resize(image: Image.Image, transform: ClipImageTransform) -> Image.Image:
    if image.mode != "RGB":
        image = image.convert("RGB")
    if transform.resize is None:
        return image
    if isinstance(transform.resize, tuple):
        size = (transform.resize[1], transform.resize[0])
    else:
        size = resized_size(image.width, image.height, transform.resize)
    return image if size == image.size else image.resize(size, transform.resample)


def _crop(pixels: np.ndarray, transform: ClipImageTransform) -> np.ndarray:
    if transform.crop is None:
        return pixels
    (crop_h, crop_w), (h, w) = transform.crop, pixels.shape[:2]
    (src_y, dst_y, n_y), (src_x, dst_x, n_x) = _span(h, crop_h, transform), _span(w, crop_w, transform)
    if dst_y == dst_x == 0:
        return pixels[src_y : src_y + n_y, src_x : src_x + n_x]
    # Smaller than the crop (no resize configured): centre it on black, as both libraries pad.
    padded = np.zeros((crop_h, crop_w, 3), dtype=pixels.dtype)
    padded[dst_y : dst_y + n_y, dst_x : dst_x + n_x] = pixels[src_y : src_y + n_y, src_x : src_x + n_x]
    return padded


def _span(size: int, crop: int, transform: ClipImageTransform) -> tuple[int, int, int]:
    """(source start, destination start, length) of the centre crop along one axis."""
    if size < crop:
        return 0, (crop - size) // 2, size
    excess = size - crop
    start = round(excess / 2.0) if transform.crop_rounding == "round" else int(excess / 2.0)
    return start, 0, crop
