"""SCRFD (insightface's det_10g.onnx and kin) decoded the way insightface's `scrfd.py` does.

The image is letterboxed into the model's input (640x640 unless the graph fixes a size), normalised as
(x - 127.5) / 128 in RGB. Per stride the graph emits scores, box distances and keypoint distances from
anchor centres (2 anchors per location for 3 strides, 1 for 5), all scaled by the stride.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from PIL import Image

from shared.errors import ConfigError
from shared.models.face.detection import REDUCING_GAP, Detections, nms

INPUT_MEAN = 127.5
INPUT_STD = 128.0

LAYOUTS: dict[int, tuple[tuple[int, ...], int]] = {9: ((8, 16, 32), 2), 15: ((8, 16, 32, 64, 128), 1)}
"""Output count -> (strides, anchors per location), for the variants that predict keypoints."""

NO_KPS_OUTPUTS = frozenset({6, 10})
"""SCRFD variants without keypoints: useless here, since alignment needs the five landmarks."""


def is_detector(session: ort.InferenceSession) -> bool:
    """insightface's model_zoo rule: a graph with five or more outputs is a detector."""
    return len(session.get_outputs()) >= 5


class ScrfdDetector:
    """Faces with five landmarks from an SCRFD onnxruntime session."""

    def __init__(self, session: ort.InferenceSession, det_size: int = 640, name: str = "detector") -> None:
        outputs = session.get_outputs()
        if len(outputs) in NO_KPS_OUTPUTS:
            raise ConfigError(
                f"{name}: this SCRFD variant has {len(outputs)} outputs and predicts no landmarks; face "
                "alignment needs them: use a model with keypoints (buffalo_l's det_10g.onnx has 9 outputs)"
            )
        if len(outputs) not in LAYOUTS:
            raise ConfigError(f"{name}: {len(outputs)} outputs is not an SCRFD layout (expected 9 or 15)")
        self.strides, self.anchors = LAYOUTS[len(outputs)]
        self.session = session
        self.name = name
        inp = session.get_inputs()[0]
        self.input_name = inp.name
        h, w = inp.shape[2], inp.shape[3]
        fixed = isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0
        self.input_size = (int(w), int(h)) if fixed else (det_size, det_size)

    def detect(self, image: Image.Image, min_score: float) -> Detections:
        """Faces scoring at least `min_score`, in `image`'s pixel coordinates."""
        blob, det_scale = self._letterbox(image.convert("RGB"))
        outs = self.session.run(None, {self.input_name: blob})
        dets = self._decode(outs, min_score)
        return dets.scaled(det_scale).clipped(image.width, image.height)

    def _letterbox(self, image: Image.Image) -> tuple[np.ndarray, float]:
        """Resize keeping the aspect ratio into the top-left of a zero canvas; returns (blob, scale)."""
        in_w, in_h = self.input_size
        if image.height / image.width > in_h / in_w:
            new_h, new_w = in_h, max(1, int(in_h * image.width / image.height))
        else:
            new_w, new_h = in_w, max(1, int(in_w * image.height / image.width))
        canvas = np.zeros((in_h, in_w, 3), dtype=np.uint8)
        canvas[:new_h, :new_w] = np.asarray(
            image.resize((new_w, new_h), Image.Resampling.BILINEAR, reducing_gap=REDUCING_GAP)
        )
        blob = (canvas.astype(np.float32) - INPUT_MEAN) / INPUT_STD
        return blob.transpose(2, 0, 1)[None], new_h / image.height

    def _decode(self, outs: list[np.ndarray], min_score: float) -> Detections:
        """Thresholded, NMS-ed boxes and landmarks in letterboxed-input pixels."""
        fmc = len(self.strides)
        in_w, in_h = self.input_size
        boxes, scores, kpss = [], [], []
        for i, stride in enumerate(self.strides):
            height, width = in_h // stride, in_w // stride
            n = height * width * self.anchors
            score = self._output(outs[i], n, 1, i)[:, 0]
            dist = self._output(outs[i + fmc], n, 4, i + fmc) * stride
            kps = self._output(outs[i + 2 * fmc], n, 10, i + 2 * fmc) * stride
            ys, xs = np.mgrid[:height, :width]
            centres = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float32) * stride
            centres = np.repeat(centres, self.anchors, axis=0)
            keep = np.flatnonzero(score >= min_score)
            c = centres[keep]
            boxes.append(np.hstack([c - dist[keep, :2], c + dist[keep, 2:]]))
            kpss.append(c[:, None, :] + kps[keep].reshape(-1, 5, 2))
            scores.append(score[keep])
        all_scores = np.concatenate(scores)
        if all_scores.size == 0:
            return Detections.empty()
        all_boxes, all_kps = np.vstack(boxes), np.vstack(kpss)
        order = nms(all_boxes, all_scores)
        return Detections(all_boxes[order], all_scores[order], all_kps[order])

    def _output(self, out: np.ndarray, n: int, width: int, index: int) -> np.ndarray:
        """One output as (n, width); batched (1, n, width) graphs are accepted too."""
        arr = np.asarray(out, dtype=np.float32)
        if arr.size != n * width:
            raise ConfigError(
                f"{self.name}: output {index} has shape {arr.shape}, expected {n}x{width} for input "
                f"{self.input_size[0]}x{self.input_size[1]}: not an SCRFD graph with this layout"
            )
        return arr.reshape(n, width)
