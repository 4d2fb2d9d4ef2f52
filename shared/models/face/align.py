"""Five-point face alignment for the retinaface-dlib backend: a least-squares similarity onto dlib's chip.

Detector landmarks (left eye, right eye, nose tip, left and right mouth corner, in image left-to-right
order) are mapped onto the template dlib's ResNet was trained on with Umeyama's least-squares similarity
(rotation + uniform scale + translation, no shear), as insightface's `norm_crop` does for ArcFace through
skimage's SimilarityTransform (the insightface backend uses `norm_crop` itself). Warping uses Pillow, with
an antialiased pre-shrink for big faces.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from shared.errors import ImageDecodeError

_DLIB_MEAN_FACE_5 = np.array(
    [
        [0.2254918, 0.2159903],  # mean of mean_face_shape points 36-41 (one eye)
        [0.7547613, 0.2159903],  # mean of points 42-47 (the other eye)
        [0.490127, 0.515625],  # point 30, the nose tip
        [0.254149, 0.780233],  # point 48, a mouth corner
        [0.726104, 0.780233],  # point 54, the other mouth corner
    ],
    dtype=np.float64,
)
"""dlib's 68-point mean face (`get_face_chip_details` in dlib's interpolation.h), reduced to the five points
RetinaFace predicts, on the unit square before padding."""

DLIB_CHIP_SIZE = 150
DLIB_CHIP_PADDING = 0.25
"""dlib's ResNet was trained on 150x150 chips with 0.25 padding (dlib's face_recognition example)."""

DLIB_TEMPLATE_150 = (DLIB_CHIP_PADDING + _DLIB_MEAN_FACE_5) / (2 * DLIB_CHIP_PADDING + 1) * DLIB_CHIP_SIZE
"""The five points where `dlib.get_face_chip` puts them in a 150x150 chip."""

_MAX_DOWNSCALE = 0.5
"""A warp shrinking more than 2x aliases; larger faces are first resized with a proper filter."""


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2x3 matrix of the least-squares similarity mapping `src` points onto `dst` (Umeyama, 1991)."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f"need matching (N>=2, 2) point sets, got {src.shape} and {dst.shape}")
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    src_var = (src_c**2).sum() / len(src)
    if not np.isfinite(src_var) or src_var < 1e-12:
        raise ValueError("landmarks are degenerate (all at one point)")
    cov = dst_c.T @ src_c / len(src)
    u, s, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:  # a reflection: flip the weakest axis instead
        d[1] = -1.0
    rot = u @ np.diag(d) @ vt
    scale = float(s @ d) / src_var
    matrix = np.empty((2, 3))
    matrix[:, :2] = scale * rot
    matrix[:, 2] = dst_mean - scale * rot @ src_mean
    return matrix


def warp_affine(image: Image.Image, matrix: np.ndarray, size: int) -> np.ndarray:
    """Warp `image` by the 2x3 `matrix` (pixel-index coordinates, as OpenCV) into a size x size RGB array."""
    full = np.vstack([matrix, [0.0, 0.0, 1.0]])
    inv = np.linalg.inv(full)[:2]
    # Pillow samples at pixel centres (+0.5); OpenCV-style matrices treat pixel centres as integers.
    rot, t = inv[:, :2], inv[:, 2]
    shift = t + 0.5 - rot @ np.array([0.5, 0.5])
    data = (rot[0, 0], rot[0, 1], shift[0], rot[1, 0], rot[1, 1], shift[1])
    out = image.transform((size, size), Image.Transform.AFFINE, data, resample=Image.Resampling.BILINEAR)
    return np.asarray(out.convert("RGB"), dtype=np.uint8)


def align_face(image: Image.Image, landmarks: np.ndarray, template: np.ndarray, size: int) -> np.ndarray:
    """The face chip (size x size x 3 uint8) with `landmarks` moved onto `template`."""
    points = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    if not np.isfinite(points).all():
        raise ImageDecodeError("face landmarks are not finite")
    matrix = similarity_transform(points, template)
    scale = float(np.hypot(matrix[0, 0], matrix[1, 0]))
    if scale < _MAX_DOWNSCALE:
        image, points = _shrink_around(image, points, matrix, size, 2.0 * scale)
        matrix = similarity_transform(points, template)
    return warp_affine(image, matrix, size)


def _shrink_around(
    image: Image.Image, points: np.ndarray, matrix: np.ndarray, size: int, factor: float
) -> tuple[Image.Image, np.ndarray]:
    """Crop the region the chip will cover and resize it by `factor` with an antialiasing filter."""
    inv = np.linalg.inv(np.vstack([matrix, [0.0, 0.0, 1.0]]))[:2]
    corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], dtype=np.float64)
    src = corners @ inv.T
    x0, y0 = np.floor(src.min(axis=0)).astype(int) - 2
    x1, y1 = np.ceil(src.max(axis=0)).astype(int) + 2
    crop = image.crop((int(x0), int(y0), int(x1), int(y1)))  # outside the image reads as black
    new_w = max(1, round(crop.width * factor))
    new_h = max(1, round(crop.height * factor))
    crop = crop.resize((new_w, new_h), Image.Resampling.BILINEAR, reducing_gap=None)
    fx, fy = new_w / (x1 - x0), new_h / (y1 - y0)
    moved = (points - [x0, y0] + 0.5) * [fx, fy] - 0.5
    return crop, moved
