"""The benchmark's photos: 12 MP and 1080p JPEGs with camera-like content, generated once and cached.

Real photos of these sizes cannot ship with the repository, and flat synthetic images decode unrealistically
fast (JPEG decode time follows entropy). So each photo is a real sample photograph (scikit-image's and
matplotlib's bundled ones) upscaled, overlaid with full-resolution texture (gravel, grass, brick) and sensor
noise, and saved at quality 90 with 4:2:0 chroma like a phone camera: 12 MP files come out at 3-6 MB. One
in four carries EXIF orientation 6 (a portrait shot stored landscape), which every decoder must honour.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class PhotoSize:
    """A named photo resolution (landscape; EXIF-rotated photos are stored this way too)."""

    name: str
    width: int
    height: int


SIZES = {
    "12mp": PhotoSize("12mp", 4000, 3000),
    "1080p": PhotoSize("1080p", 1920, 1080),
}
"""Phone camera output and a typical screenshot/video-frame size."""

JPEG_QUALITY = 90
ORIENTATION_TAG = 0x0112
GENERATOR_VERSION = 1
"""Bump to regenerate cached photos when the recipe changes."""


def _sources() -> list[np.ndarray]:
    """The bundled colour photographs the benchmark photos are made of."""
    import matplotlib.cbook
    from skimage import data

    photos = [
        data.astronaut(),
        data.coffee(),
        data.chelsea(),
        data.rocket(),
        data.hubble_deep_field(),
        data.immunohistochemistry(),
        data.retina(),
        data.stereo_motorcycle()[0],
    ]
    hopper = Path(str(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))
    with Image.open(hopper) as img:
        photos.append(np.asarray(img.convert("RGB")))
    return photos


def _textures() -> list[np.ndarray]:
    from skimage import data

    return [data.gravel(), data.grass(), data.brick()]


def make_photo(index: int, size: PhotoSize) -> Image.Image:
    """Photo number `index` at `size`: deterministic for a given index."""
    rng = np.random.default_rng(1000 + index)
    sources, textures = _sources(), _textures()
    src = Image.fromarray(sources[index % len(sources)])
    # Crop the source to the target aspect ratio, then upscale (bicubic, as a camera's ISP would not).
    target_ratio = size.width / size.height
    w, h = src.size
    if w / h > target_ratio:
        crop_w = int(h * target_ratio)
        left = int(rng.integers(0, w - crop_w + 1))
        src = src.crop((left, 0, left + crop_w, h))
    else:
        crop_h = int(w / target_ratio)
        top = int(rng.integers(0, h - crop_h + 1))
        src = src.crop((0, top, w, top + crop_h))
    base = np.asarray(src.resize((size.width, size.height), Image.Resampling.BICUBIC), dtype=np.int16)
    texture = textures[index % len(textures)]
    reps = (size.height // texture.shape[0] + 1, size.width // texture.shape[1] + 1)
    tiled = np.tile(texture, reps)[: size.height, : size.width].astype(np.int16)
    detail = ((tiled - 128) // 6)[:, :, None]  # texture at full resolution: fine detail like real scenes
    noise = rng.normal(0.0, 4.0, size=(size.height, size.width, 1)).astype(np.int16)
    pixels = np.clip(base + detail + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, "RGB")


def ensure_photos(cache_dir: Path, size: PhotoSize, count: int) -> list[Path]:
    """`count` JPEGs of `size` under `cache_dir/<size>/`, generating the missing ones."""
    folder = cache_dir / f"{size.name}-v{GENERATOR_VERSION}"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"photo-{i:03d}.jpg"
        if not path.is_file():
            image = make_photo(i, size)
            exif = Image.Exif()
            if i % 4 == 3:
                exif[ORIENTATION_TAG] = 6
            tmp = path.with_suffix(".part")
            image.save(tmp, "JPEG", quality=JPEG_QUALITY, subsampling="4:2:0", exif=exif.tobytes())
            tmp.replace(path)
        paths.append(path)
    return paths
