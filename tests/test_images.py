"""shared.images: orientation, JPEG draft decoding, formats, and every failure as ImageDecodeError."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shared.errors import ImageDecodeError
from shared.images import load_image, load_image_bytes

RED, BLUE = (255, 0, 0), (0, 0, 255)


def two_tone(width: int, height: int) -> Image.Image:
    """Left half red, right half blue: shows where the left edge ends up after rotation."""
    img = Image.new("RGB", (width, height), BLUE)
    img.paste(RED, (0, 0, width // 2, height))
    return img


def save_jpeg(img: Image.Image, path: Path, orientation: int | None = None, quality: int = 90) -> Path:
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    img.save(path, "JPEG", quality=quality, exif=exif.tobytes())
    return path


def near(pixel: object, colour: tuple[int, int, int], tol: int = 40) -> bool:
    assert isinstance(pixel, tuple)
    return all(abs(int(a) - b) <= tol for a, b in zip(pixel, colour, strict=True))


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    path = save_jpeg(two_tone(80, 40), tmp_path / "rotated.jpg", orientation=6)  # display: rotate 90° CW
    img = load_image(path)
    assert img.mode == "RGB"
    assert img.size == (40, 80)
    assert near(img.getpixel((20, 10)), RED) and near(img.getpixel((20, 70)), BLUE)


def test_no_exif_keeps_pixels_as_stored(tmp_path: Path) -> None:
    img = load_image(save_jpeg(two_tone(80, 40), tmp_path / "plain.jpg"))
    assert img.size == (80, 40)
    assert near(img.getpixel((10, 20)), RED) and near(img.getpixel((70, 20)), BLUE)


@pytest.mark.parametrize(
    ("min_side", "expected"),
    [
        (224, (400, 300)),
        (150, (200, 150)),
        (300, (400, 300)),
        (301, (800, 600)),
        (700, (1600, 1200)),
        (None, (1600, 1200)),
    ],
)
def test_jpeg_draft_scales_by_power_of_two_keeping_min_side(
    tmp_path: Path, min_side: int | None, expected: tuple[int, int]
) -> None:
    path = save_jpeg(two_tone(1600, 1200), tmp_path / "big.jpg")
    img = load_image(path, min_side=min_side)
    assert img.size == expected
    assert min_side is None or min(img.size) >= min_side
    assert near(img.getpixel((5, 5)), RED) and near(img.getpixel((img.width - 5, 5)), BLUE)


def test_draft_then_orientation(tmp_path: Path) -> None:
    path = save_jpeg(two_tone(2000, 1000), tmp_path / "big-rotated.jpg", orientation=6)
    img = load_image(path, min_side=224)
    assert img.size == (250, 500)  # 1/4 scale, then turned upright
    assert near(img.getpixel((125, 50)), RED) and near(img.getpixel((125, 450)), BLUE)


def test_draft_is_not_applied_to_png(tmp_path: Path) -> None:
    two_tone(1600, 1200).save(tmp_path / "big.png")
    assert load_image(tmp_path / "big.png", min_side=224).size == (1600, 1200)


def test_png_with_alpha_is_composited_on_white(tmp_path: Path) -> None:
    img = Image.new("RGBA", (10, 10), (255, 0, 0, 255))
    img.putpixel((0, 0), (0, 0, 0, 0))
    img.save(tmp_path / "alpha.png")
    out = load_image(tmp_path / "alpha.png")
    assert out.mode == "RGB"
    assert out.getpixel((0, 0)) == (255, 255, 255) and out.getpixel((5, 5)) == (255, 0, 0)


def test_sixteen_bit_greyscale_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    arr = np.array([[0, 32896, 65535]], dtype=np.uint16)
    Image.fromarray(arr).save(tmp_path / "grey16.png")
    out = load_image(tmp_path / "grey16.png")
    assert [out.getpixel((x, 0)) for x in range(3)] == [(0, 0, 0), (128, 128, 128), (255, 255, 255)]


def test_webp_round_trip(tmp_path: Path) -> None:
    two_tone(64, 32).save(tmp_path / "x.webp", lossless=True)
    out = load_image(tmp_path / "x.webp")
    assert out.size == (64, 32) and out.getpixel((0, 0)) == RED and out.getpixel((63, 0)) == BLUE


def test_heic_round_trip(tmp_path: Path) -> None:
    pillow_heif = pytest.importorskip("pillow_heif")
    pillow_heif.register_heif_opener()
    path = tmp_path / "x.heic"
    try:
        two_tone(64, 32).save(path, format="HEIF", quality=95)
    except (KeyError, OSError, ValueError) as exc:  # libheif built without an HEVC encoder
        pytest.skip(f"pillow_heif cannot encode HEIC here: {exc}")
    out = load_image(path)
    assert out.mode == "RGB" and out.size == (64, 32)
    assert near(out.getpixel((4, 16)), RED) and near(out.getpixel((60, 16)), BLUE)


def test_cmyk_jpeg_becomes_rgb(tmp_path: Path) -> None:
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")
    out = load_image(tmp_path / "cmyk.jpg")
    assert out.mode == "RGB" and near(out.getpixel((4, 4)), RED)


def test_bytes_variant_matches_path(tmp_path: Path) -> None:
    path = save_jpeg(two_tone(1600, 1200), tmp_path / "b.jpg", orientation=3)
    a = load_image(path, min_side=224)
    b = load_image_bytes(path.read_bytes(), min_side=224)
    assert a.size == b.size and np.array_equal(np.asarray(a), np.asarray(b))


def test_over_max_pixels_is_refused(tmp_path: Path) -> None:
    save_jpeg(two_tone(200, 100), tmp_path / "wide.jpg")
    assert load_image(tmp_path / "wide.jpg", max_pixels=20_000).size == (200, 100)
    with pytest.raises(ImageDecodeError, match="decompression bomb"):
        load_image(tmp_path / "wide.jpg", max_pixels=19_999)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims to be width x height but holds a few bytes: a decompression bomb's header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0"))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("max_pixels", [None, 10_000])
def test_decompression_bomb_header_is_refused_before_decoding(tmp_path: Path, max_pixels: int | None) -> None:
    # None: our check is off, so PIL's own DecompressionBombError (> 2x its limit) must be translated.
    path = tmp_path / "bomb.png"
    path.write_bytes(png_header_only(40_000, 40_000))
    with pytest.raises(ImageDecodeError, match="decompression bomb"):
        load_image(path, max_pixels=max_pixels)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_truncated_file(tmp_path: Path, fmt: str) -> None:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, fmt)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImageDecodeError, match=str(path.name)):
        load_image(path)


def test_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a photo")
    with pytest.raises(ImageDecodeError, match="not an image"):
        load_image(path)
    with pytest.raises(ImageDecodeError, match="not an image"):
        load_image_bytes(b"")


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(ImageDecodeError, match="not found"):
        load_image(tmp_path / "gone.jpg")
    with pytest.raises(ImageDecodeError, match="cannot open"):
        load_image(tmp_path)
