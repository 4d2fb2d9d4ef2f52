"""One decode per photo per process, at the largest size any hosted capability asked for."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from shared.errors import UnsafePath
from workers.photo_decoder import PhotoDecoder, displayed_size


@pytest.fixture
def big_jpeg(tmp_path: Path) -> Path:
    path = tmp_path / "uploads" / "big.jpg"
    path.parent.mkdir()
    Image.new("RGB", (4000, 3000), (90, 140, 30)).save(path, quality=85)
    return path


def test_clip_size_decode_is_dct_scaled_and_maps_back_to_full_size(big_jpeg: Path, tmp_path: Path) -> None:
    photo = PhotoDecoder([tmp_path]).load("uploads/big.jpg", min_side=224)
    assert min(photo.image.size) >= 224 and photo.image.size[0] < 1000
    assert photo.original_size == (4000, 3000)
    assert photo.scale == pytest.approx(4000 / photo.image.size[0])


def test_second_capability_reuses_a_large_enough_decode(big_jpeg: Path, tmp_path: Path) -> None:
    decoder = PhotoDecoder([tmp_path])
    for_faces = decoder.load("uploads/big.jpg", min_side=1280)
    assert decoder.load("uploads/big.jpg", min_side=224) is for_faces  # CLIP after faces: no new decode


def test_a_larger_request_decodes_again(big_jpeg: Path, tmp_path: Path) -> None:
    decoder = PhotoDecoder([tmp_path])
    small = decoder.load("uploads/big.jpg", min_side=224)
    large = decoder.load("uploads/big.jpg", min_side=1280)
    assert large is not small and min(large.image.size) >= 1280


def test_a_changed_file_is_decoded_again(big_jpeg: Path, tmp_path: Path) -> None:
    decoder = PhotoDecoder([tmp_path])
    first = decoder.load("uploads/big.jpg", min_side=224)
    Image.new("RGB", (800, 600), (1, 2, 3)).save(big_jpeg, quality=85)
    assert decoder.load("uploads/big.jpg", min_side=224).original_size == (800, 600) != first.original_size


def test_exif_rotation_swaps_the_displayed_size(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "r.jpg"
    Image.new("RGB", (400, 300)).save(path, exif=exif)
    assert displayed_size(path) == (300, 400)
    assert PhotoDecoder([tmp_path]).load("r.jpg", None).image.size == (300, 400)


def test_paths_are_checked_before_decoding(tmp_path: Path) -> None:
    with pytest.raises(UnsafePath):
        PhotoDecoder([tmp_path / "uploads"]).load("../../etc/passwd", 224)


def test_the_cache_is_bounded_in_bytes_oldest_out(tmp_path: Path) -> None:
    (tmp_path / "u").mkdir()
    for i in range(3):
        Image.new("RGB", (1000, 1000), (i, i, i)).save(tmp_path / "u" / f"{i}.jpg")
    decoder = PhotoDecoder([tmp_path], cache_bytes=2 * 1000 * 1000 * 3)  # room for two decodes
    first = decoder.load("u/0.jpg", None)
    decoder.load("u/1.jpg", None)
    decoder.load("u/2.jpg", None)
    assert decoder.cached_bytes() == 2 * 1000 * 1000 * 3
    assert decoder.load("u/2.jpg", None) is decoder.load("u/2.jpg", None)
    assert decoder.load("u/0.jpg", None) is not first  # evicted, decoded again


def test_a_bigger_decode_replaces_the_smaller_one_in_the_count(big_jpeg: Path, tmp_path: Path) -> None:
    decoder = PhotoDecoder([tmp_path])
    decoder.load("uploads/big.jpg", min_side=224)
    large = decoder.load("uploads/big.jpg", min_side=1280)
    w, h = large.image.size
    assert decoder.cached_bytes() == w * h * 3


def test_without_a_cache_every_load_decodes(big_jpeg: Path, tmp_path: Path) -> None:
    decoder = PhotoDecoder([tmp_path], cache_bytes=0)
    assert decoder.load("uploads/big.jpg", 224) is not decoder.load("uploads/big.jpg", 224)
    assert decoder.cached_bytes() == 0


@pytest.mark.parametrize("threads", [1, 3])
def test_a_batch_decodes_in_order_with_each_failure_in_its_place(tmp_path: Path, threads: int) -> None:
    (tmp_path / "u").mkdir()
    for i in range(4):
        Image.new("RGB", (640, 480), (40 * i, 0, 0)).save(tmp_path / "u" / f"{i}.jpg")
    (tmp_path / "u" / "broken.jpg").write_bytes(b"not a jpeg")
    paths = ["u/0.jpg", "u/broken.jpg", "u/1.jpg", "../../etc/passwd", "u/2.jpg", "u/3.jpg"]
    out = PhotoDecoder([tmp_path], cache_bytes=0, threads=threads).load_all(paths, 224)
    assert isinstance(out[1], Exception) and isinstance(out[3], UnsafePath)
    reds = [x.image.getpixel((10, 10))[0] for x in out if not isinstance(x, Exception)]
    assert len(reds) == 4 and reds == sorted(reds)  # photos 0..3 in their order
