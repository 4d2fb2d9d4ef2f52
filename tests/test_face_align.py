"""Five-point alignment checked against independent implementations (skimage, OpenCV)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from shared.errors import ImageDecodeError
from shared.models.face.align import DLIB_TEMPLATE_150, align_face, similarity_transform, warp_affine

ARCFACE_TEMPLATE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]]
)
"""insightface's arcface_dst: a second, differently shaped template for the generic checks."""

LANDMARKS = np.array([[205.0, 101.0], [247.0, 103.0], [224.0, 129.0], [203.0, 138.0], [244.0, 140.0]])
"""Roughly where RetinaFace puts the astronaut's landmarks."""


def _textured(size: tuple[int, int] = (512, 512), seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)
    return Image.fromarray(small).resize(size, Image.Resampling.BICUBIC)


def test_similarity_matches_skimage_umeyama() -> None:
    transform = pytest.importorskip("skimage.transform")
    ref = transform.SimilarityTransform.from_estimate(LANDMARKS, ARCFACE_TEMPLATE_112)
    np.testing.assert_allclose(
        similarity_transform(LANDMARKS, ARCFACE_TEMPLATE_112), ref.params[:2], atol=1e-9
    )


def test_similarity_recovers_a_known_transform() -> None:
    angle, scale, shift = np.deg2rad(17.0), 0.37, np.array([12.0, -40.0])
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    dst = LANDMARKS @ rot.T + shift
    np.testing.assert_allclose(
        similarity_transform(LANDMARKS, dst), np.hstack([rot, shift[:, None]]), atol=1e-9
    )


def test_warp_matches_opencv() -> None:
    cv2 = pytest.importorskip("cv2")
    img = _textured()
    matrix = similarity_transform(LANDMARKS, ARCFACE_TEMPLATE_112 * 2)  # upscaling: no shrink pre-pass
    ours = warp_affine(img, matrix, 224).astype(np.int16)
    ref = cv2.warpAffine(np.asarray(img), matrix, (224, 224), flags=cv2.INTER_LINEAR, borderValue=0)
    diff = np.abs(ours - ref.astype(np.int16))
    assert diff.mean() < 1.5, diff.mean()
    assert np.percentile(diff, 99) <= 6


def test_landmarks_land_near_the_template() -> None:
    """Marks drawn at the landmarks show up where the transform puts them, a few pixels from the template."""
    canvas = np.zeros((400, 400, 3), np.uint8)
    for x, y in LANDMARKS:
        canvas[int(y) - 2 : int(y) + 3, int(x) - 2 : int(x) + 3] = 255
    chip = align_face(Image.fromarray(canvas), LANDMARKS, DLIB_TEMPLATE_150, 150)
    moved = np.hstack([LANDMARKS, np.ones((5, 1))]) @ similarity_transform(LANDMARKS, DLIB_TEMPLATE_150).T
    assert np.abs(moved - DLIB_TEMPLATE_150).max() < 10  # least squares (a smile lifts the mouth): close
    for mx, my in moved:
        x, y = int(round(mx)), int(round(my))
        assert chip[y - 1 : y + 2, x - 1 : x + 2].mean() > 100, (mx, my)
    assert chip.mean() < 10  # nothing else is bright


def test_large_faces_are_shrunk_first_to_the_same_chip() -> None:
    """A 6x larger copy of the image gives (nearly) the same chip: the antialiased pre-shrink path."""
    img = _textured((400, 400), seed=1)
    chip = align_face(img, LANDMARKS, ARCFACE_TEMPLATE_112, 112).astype(np.int16)
    big = img.resize((2400, 2400), Image.Resampling.BICUBIC)
    chip_big = align_face(big, LANDMARKS * 6 + 2.5, ARCFACE_TEMPLATE_112, 112).astype(np.int16)
    assert np.abs(chip - chip_big).mean() < 6


def test_bad_landmarks_are_refused() -> None:
    img = _textured()
    with pytest.raises(ValueError):
        align_face(img, np.ones((5, 2)), ARCFACE_TEMPLATE_112, 112)
    with pytest.raises(ImageDecodeError):
        align_face(img, np.full((5, 2), np.nan), ARCFACE_TEMPLATE_112, 112)
