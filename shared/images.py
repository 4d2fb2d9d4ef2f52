"""Decode photos into RGB PIL images the way the user sees them (EXIF orientation applied).

JPEGs are decoded with libjpeg's DCT scaling (`Image.draft`) when the caller says how small the image may
get: a 12 MP photo decoded at 1/8 scale is ~5x faster and still larger than any CLIP input. Every failure
(missing, truncated, not an image, decompression bomb) becomes an `ImageDecodeError`.
"""

from __future__ import annotations

import functools
import io
import struct
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps

from shared.errors import ImageDecodeError

DEFAULT_MAX_PIXELS: int | None = Image.MAX_IMAGE_PIXELS
"""PIL's own decompression-bomb limit (~89 MP); larger images are refused rather than decoded."""

_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, TypeError)
"""What PIL's plugins raise on corrupt data (truncated streams, bad headers, broken EXIF)."""


def load_image(
    path: Path, *, min_side: int | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> Image.Image:
    """Decode `path` to RGB with EXIF orientation applied; JPEGs may be DCT-scaled down to >= `min_side`."""
    try:
        fp = open(path, "rb")  # noqa: SIM115 - closed in the finally below, after decoding
    except FileNotFoundError as exc:
        raise ImageDecodeError(f"image file not found: {path}") from exc
    except OSError as exc:  # a directory, no permission, ...
        raise ImageDecodeError(f"cannot open image file {path}: {exc.strerror or exc}") from exc
    try:
        return _decode(fp, str(path), min_side=min_side, max_pixels=max_pixels)
    finally:
        fp.close()


def load_image_bytes(
    data: bytes,
    *,
    min_side: int | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    name: str = "<bytes>",
) -> Image.Image:
    """`load_image` for an in-memory file (an upload, a test fixture)."""
    return _decode(io.BytesIO(data), name, min_side=min_side, max_pixels=max_pixels)


def _decode(fp: BinaryIO, name: str, *, min_side: int | None, max_pixels: int | None) -> Image.Image:
    _register_heif()
    try:
        img = Image.open(fp)
        width, height = img.size
        if max_pixels is not None and width * height > max_pixels:
            raise ImageDecodeError(
                f"image {name} is {width}x{height} = {width * height} pixels, over the limit of {max_pixels} "
                "(possible decompression bomb)"
            )
        if min_side is not None and img.format == "JPEG" and min(width, height) > min_side:
            # Scale by the largest power of two that keeps both sides >= min_side.
            img.draft("RGB", (min_side, min_side))
        img.load()
        ImageOps.exif_transpose(img, in_place=True)  # in place: no 36 MB copy of an upright 12 MP photo
        return _to_rgb(img)
    except ImageDecodeError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(f"image {name} is too large to decode (decompression bomb): {exc}") from exc
    except Image.UnidentifiedImageError as exc:
        raise ImageDecodeError(
            f"{name} is not an image in a supported format (JPEG, PNG, WebP, HEIC, ...)"
        ) from exc
    except _DECODE_ERRORS as exc:
        raise ImageDecodeError(f"cannot decode image {name} (truncated or corrupt?): {exc}") from exc


def _to_rgb(img: Image.Image) -> Image.Image:
    """RGB, with transparency composited on white and high-bit-depth greyscale scaled to 8 bits."""
    if img.mode == "RGB":
        return img
    if img.mode.startswith("I"):
        # 16-bit greyscale PNG/TIFF: PIL's own convert would clip everything above 255 to white.
        arr = np.asarray(img, dtype=np.int64)
        scale = 257 if img.mode != "I" or arr.max(initial=0) > 255 else 1
        img = Image.fromarray((np.clip(arr, 0, 255 * scale) // scale).astype(np.uint8), "L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


@functools.cache
def _register_heif() -> None:
    """Teach PIL to open HEIC/HEIF (iPhone photos); done once per process."""
    try:
        import pillow_heif
    except ImportError:  # optional at runtime: HEIC files then fail as "not an image"
        return
    pillow_heif.register_heif_opener()
