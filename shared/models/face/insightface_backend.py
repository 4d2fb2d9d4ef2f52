"""The default face backend: insightface's buffalo_l pack (SCRFD + ArcFace) run with onnxruntime directly.

The pack is read from a local folder `store.locations.face_pack_dir` (MINDSIGHT_MODELS_DIR/insightface/
FACE_MODEL_NAME unless FACE_MODEL_DIR moves it); the
insightface package itself is not needed. Like insightface's model_zoo, each .onnx file is identified by
its signature (a detector has five or more outputs; a recogniser takes a square input of at least 112
pixels, a multiple of 16, and has one output), so the 1k3d68 / 2d106det / genderage models of the pack
are skipped. Faces are aligned onto `arcface_dst` at 112x112 and fed as (x - 127.5) / 127.5 RGB.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

from shared.errors import ConfigError
from shared.models.base import Face, FaceAnalyzer, RuntimeInfo, l2_normalize
from shared.models.face.align import align_face, arcface_template
from shared.models.face.detection import onnx_session, provider_label, to_faces
from shared.models.face.scrfd_detector import ScrfdDetector, is_detector

log = logging.getLogger(__name__)

PREFERRED_FILES = ("det_10g.onnx", "w600k_r50.onnx")
"""buffalo_l's detector and recogniser: tried first, so the pack's other big models are never opened."""

ARCFACE_MEAN = 127.5
ARCFACE_STD = 127.5


def is_recognizer(session: ort.InferenceSession) -> bool:
    """insightface's model_zoo rule for ArcFace: square input >= 112 px, a multiple of 16; one output."""
    shape = session.get_inputs()[0].shape
    if len(shape) != 4 or len(session.get_outputs()) != 1:
        return False
    h, w = shape[2], shape[3]
    return isinstance(h, int) and h == w and h >= 112 and h % 16 == 0


class ArcFaceEmbedder:
    """Aligned face chips -> L2-normalised ArcFace vectors."""

    def __init__(self, session: ort.InferenceSession) -> None:
        self.session = session
        inp = session.get_inputs()[0]
        self.input_name = inp.name
        self.size = int(inp.shape[2])
        self.batched = not (isinstance(inp.shape[0], int) and inp.shape[0] == 1)
        width = session.get_outputs()[0].shape[-1]
        if not isinstance(width, int) or width <= 0:
            raise ConfigError("recogniser output width is not fixed: cannot tell its embedding dimension")
        self.dim = width

    def embed(self, chips: list[np.ndarray]) -> np.ndarray:
        """(N, dim) unit vectors for N RGB chips of size x size."""
        if not chips:
            return np.zeros((0, self.dim), dtype=np.float32)
        blob = (np.stack(chips).astype(np.float32) - ARCFACE_MEAN) / ARCFACE_STD
        blob = blob.transpose(0, 3, 1, 2)
        if self.batched:
            out = self.session.run(None, {self.input_name: blob})[0]
        else:
            out = np.vstack([self.session.run(None, {self.input_name: b[None]})[0] for b in blob])
        return l2_normalize(out.reshape(len(chips), self.dim))


class InsightFaceAnalyzer(FaceAnalyzer):
    """RGB images -> faces with ArcFace embeddings, from a local buffalo_l-style model folder."""

    def __init__(
        self,
        pack_dir: Path,
        providers: Sequence[str] | None = None,
        min_score: float = 0.5,
        det_size: int = 640,
        threads: int = 0,
    ) -> None:
        super().__init__()
        self.pack_dir = pack_dir
        self.providers = providers
        self.min_score = min_score
        self.det_size = det_size
        self.threads = threads
        self.dim = 0  # known once loaded: the recogniser's output width
        self.detector: ScrfdDetector | None = None
        self.embedder: ArcFaceEmbedder | None = None

    def _load(self) -> None:
        detector, recognizer = self._find_models()
        self.detector = ScrfdDetector(detector[1], self.det_size, name=str(detector[0]))
        self.embedder = ArcFaceEmbedder(recognizer[1])
        self.dim = self.embedder.dim
        self.files = (detector[0].name, recognizer[0].name)
        log.info("face backend insightface loaded from %s: %s", self.pack_dir, self.runtime_info)

    def _find_models(self) -> tuple[tuple[Path, ort.InferenceSession], tuple[Path, ort.InferenceSession]]:
        """(path, session) of the detector and the recogniser, identified by their signatures."""
        hint = (
            f"download the {self.pack_dir.name} pack (det_10g.onnx + w600k_r50.onnx) into this folder "
            f"(`mindsight models download`, or unzip {self.pack_dir.name}.zip there; it lies in "
            "MINDSIGHT_MODELS_DIR/insightface unless FACE_MODEL_DIR names another parent folder)"
        )
        if not self.pack_dir.is_dir():
            raise ConfigError(f"face model folder {self.pack_dir} does not exist: {hint}")
        files = sorted(self.pack_dir.glob("*.onnx"), key=lambda p: (p.name not in PREFERRED_FILES, p.name))
        if not files:
            raise ConfigError(f"face model folder {self.pack_dir} has no .onnx files: {hint}")
        detector = recognizer = None
        for path in files:
            session = onnx_session(path, self.providers, self.threads)
            if detector is None and is_detector(session):
                detector = (path, session)
            elif recognizer is None and is_recognizer(session):
                recognizer = (path, session)
            if detector and recognizer:
                return detector, recognizer
        missing = "a detector (SCRFD, e.g. det_10g.onnx)" if detector is None else "a recogniser (ArcFace)"
        raise ConfigError(f"face model folder {self.pack_dir} has no {missing}: {hint}")

    def _predict(self, batch: list[Image.Image]) -> list[list[Face]]:
        assert self.detector is not None and self.embedder is not None
        out: list[list[Face]] = []
        for image in batch:
            rgb = image.convert("RGB")
            dets = self.detector.detect(rgb, self.min_score)
            size = self.embedder.size
            template = arcface_template(size)
            chips = [align_face(rgb, dets.landmarks[i], template, size) for i in range(len(dets))]
            out.append(to_faces(dets, self.embedder.embed(chips)))
        return out

    @property
    def runtime_info(self) -> RuntimeInfo:
        if self.detector is None or self.embedder is None:
            return RuntimeInfo(runtime="onnxruntime", device="not loaded")
        return RuntimeInfo(
            runtime="onnxruntime",
            device=provider_label(self.embedder.session),
            extra={"pack": str(self.pack_dir), "files": list(self.files), "dim": self.dim},
        )
