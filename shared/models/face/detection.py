"""What both face detectors share: detections as arrays, non-maximum suppression, ONNX sessions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from shared.device import onnx_providers
from shared.models.base import Face
from shared.models.onnx.session import open_session

NMS_IOU = 0.4
"""Overlap above which the weaker of two boxes is dropped; insightface and RetinaFace both use 0.4."""

REDUCING_GAP = 3.0
"""Detectors shrink big photos with Pillow's integer box reduce first, then resample: several times
faster on a 12 MP photo, and by Pillow's docs indistinguishable from a full resample at a gap of 3."""


@dataclass(frozen=True)
class Detections:
    """Faces found in one image: boxes (N, 4) as x1 y1 x2 y2, scores (N,), landmarks (N, 5, 2)."""

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0, 5, 2), np.float32))

    def __len__(self) -> int:
        return len(self.scores)

    def select(self, index: np.ndarray) -> Detections:
        """The detections at `index` (indices or a boolean mask), in that order."""
        return Detections(self.boxes[index], self.scores[index], self.landmarks[index])

    def scaled(self, factor: float) -> Detections:
        """Coordinates divided by `factor`: from a resized detector input back to the source image."""
        return Detections(self.boxes / factor, self.scores, self.landmarks / factor)

    def clipped(self, width: int, height: int) -> Detections:
        """Boxes clipped to the image; landmarks are left alone (a half-visible face keeps its geometry)."""
        boxes = self.boxes.copy()
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
        return Detections(boxes, self.scores, self.landmarks)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float = NMS_IOU) -> np.ndarray:
    """Indices of the boxes kept by greedy non-maximum suppression, best score first."""
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    order = scores.argsort()[::-1]
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
        inter = w * h
        iou = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-9)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def onnx_session(
    model: bytes | Path, providers: Sequence[str] | None, threads: int = 0
) -> ort.InferenceSession:
    """A face model's session on `providers` (default: CUDA if present, then CPU); ConfigError on failure."""
    return open_session(model, list(providers or onnx_providers("auto")), threads)


def provider_label(session: ort.InferenceSession) -> str:
    """The providers a session really got, e.g. 'CUDAExecutionProvider,CPUExecutionProvider'."""
    return ",".join(session.get_providers())


def to_faces(dets: Detections, vectors: np.ndarray) -> list[Face]:
    """Face objects from detections and their embeddings (same order), best score first."""
    order = np.argsort(dets.scores)[::-1]
    return [
        Face(
            bbox=(
                float(dets.boxes[i, 0]),
                float(dets.boxes[i, 1]),
                float(dets.boxes[i, 2]),
                float(dets.boxes[i, 3]),
            ),
            score=float(dets.scores[i]),
            landmarks=[(float(x), float(y)) for x, y in dets.landmarks[i]],
            embedding=vectors[i],
        )
        for i in order
    ]
