"""The default face backend: insightface's buffalo_l pack (SCRFD + ArcFace) on our own onnxruntime sessions.

The pack is read from `store.locations.face_pack_dir` (MINDSIGHT_MODELS_DIR/insightface/FACE_MODEL_NAME
unless FACE_MODEL_DIR moves it). As Immich's ML service does, the `insightface` package supplies the
detector (`model_zoo.SCRFD`: letterbox, anchor decoding, NMS) and the alignment (`face_align.norm_crop`
onto `arcface_dst`), while the sessions are ours (providers, threads, one factory). Like insightface's
model_zoo, each .onnx file is identified by its signature (a detector has five or more outputs; a
recogniser takes a square input of at least 112 pixels, a multiple of 16, and has one output), so the
1k3d68 / 2d106det / genderage models of the pack are never used.

Kept from before: the big-photo pre-shrink (Pillow's reducing_gap resize to the detector's input, so a
12 MP photo is not resized by cv2 at full size) with its box mapping back to the photo's pixels, and the
ArcFace embedder. insightface's `ArcFaceONNX` parses the whole graph with `onnx.load` to guess its input
normalisation: measured with a w600k_r50-sized graph, 619 MB peak and 1.9 s to load against 378 MB and
0.6 s for `ArcFaceEmbedder` on the same session (docs/architecture.md).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
from insightface.model_zoo.scrfd import SCRFD
from insightface.utils.face_align import norm_crop
from PIL import Image

from shared.errors import ConfigError
from shared.models.base import Face, FaceAnalyzer, RuntimeInfo, l2_normalize
from shared.models.face.detection import REDUCING_GAP, Detections, onnx_session, provider_label, to_faces

log = logging.getLogger(__name__)

# insightface 2.1's norm_crop calls skimage's deprecated SimilarityTransform.estimate on every face.
warnings.filterwarnings("ignore", category=FutureWarning, module=r"insightface\.utils\.face_align")

PREFERRED_FILES = ("det_10g.onnx", "w600k_r50.onnx")
"""buffalo_l's detector and recogniser: tried first, so the pack's other big models are never opened."""

ARCFACE_MEAN = 127.5
ARCFACE_STD = 127.5

NO_KPS_OUTPUTS = frozenset({6, 10})
"""SCRFD variants without keypoints: useless here, since alignment needs the five landmarks."""
KPS_OUTPUTS = frozenset({9, 15})
"""SCRFD variants with keypoints (3 strides x 3 heads, or 5 x 3), as insightface's SCRFD reads them."""


def is_detector(session: ort.InferenceSession) -> bool:
    """insightface's model_zoo rule: a graph with five or more outputs is a detector."""
    return len(session.get_outputs()) >= 5


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
        self.detector: ScrfdOnSession | None = None
        self.embedder: ArcFaceEmbedder | None = None

    def _load(self) -> None:
        detector, recognizer = self._find_models()
        self.detector = ScrfdOnSession(detector[1], self.det_size, name=str(detector[0]))
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
            pixels = np.asarray(rgb) if len(dets) else None  # a full-size copy: only when there are faces
            size = self.embedder.size
            chips = [norm_crop(pixels, dets.landmarks[i], image_size=size) for i in range(len(dets))]
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


class ScrfdOnSession:
    """insightface's SCRFD on our session, fed a photo pre-shrunk to its input; boxes in photo pixels."""

    def __init__(self, session: ort.InferenceSession, det_size: int = 640, name: str = "detector") -> None:
        outputs = len(session.get_outputs())
        if outputs in NO_KPS_OUTPUTS:
            raise ConfigError(
                f"{name}: this SCRFD variant has {outputs} outputs and predicts no landmarks; face "
                "alignment needs them: use a model with keypoints (buffalo_l's det_10g.onnx has 9 outputs)"
            )
        if outputs not in KPS_OUTPUTS:
            raise ConfigError(f"{name}: {outputs} outputs is not an SCRFD layout (expected 9 or 15)")
        self.name = name
        # model_file=None: SCRFD then never opens sessions of its own (one per input size otherwise).
        self.scrfd = SCRFD(model_file=None, session=session, static_shape_sessions=False)
        h, w = session.get_inputs()[0].shape[2:4]
        fixed = isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0
        self.input_size = (int(w), int(h)) if fixed else (det_size, det_size)
        self.scrfd.prepare(0, input_size=self.input_size)

    def detect(self, image: Image.Image, min_score: float) -> Detections:
        """Faces scoring at least `min_score`, in `image`'s pixel coordinates."""
        small, scale = self._fit(image)
        bgr = np.ascontiguousarray(np.asarray(small)[:, :, ::-1])
        try:
            boxes, kpss = self.scrfd.detect(bgr, input_size=self.input_size, det_thresh=min_score)
        except ValueError as exc:  # a graph whose outputs do not fit the SCRFD layout for this input
            raise ConfigError(f"{self.name}: not an SCRFD graph with this layout ({exc})") from exc
        if len(boxes) == 0 or kpss is None:
            return Detections.empty()
        dets = Detections(
            boxes[:, :4].astype(np.float32), boxes[:, 4].astype(np.float32), kpss.astype(np.float32)
        )
        return dets.scaled(scale).clipped(image.width, image.height)

    def _fit(self, image: Image.Image) -> tuple[Image.Image, float]:
        """The photo resized (aspect kept) to fill the input's width or height, and the factor applied.

        SCRFD would letterbox with a plain cv2 resize of the full photo; resizing here with Pillow's
        reducing_gap first is several times faster on a 12 MP photo and filters properly, and SCRFD's
        own resize becomes the identity.
        """
        in_w, in_h = self.input_size
        if image.height / image.width > in_h / in_w:
            new_h, new_w = in_h, max(1, int(in_h * image.width / image.height))
        else:
            new_w, new_h = in_w, max(1, int(in_w * image.height / image.width))
        small = image.resize((new_w, new_h), Image.Resampling.BILINEAR, reducing_gap=REDUCING_GAP)
        return small, new_h / image.height
