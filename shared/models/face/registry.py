"""Pick, build and load the face backend FACE_BACKEND names, and check it against the configured dimension."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from shared.errors import ConfigError
from shared.models.base import FaceAnalyzer
from shared.settings import FaceSettings

log = logging.getLogger(__name__)

DEFAULT_DISTANCE_THRESHOLDS: dict[str, float] = {"insightface": 0.42, "retinaface-dlib": 0.09}
"""Cosine distance under which two faces are one person, per backend, when FACE_DISTANCE_THRESHOLD is unset.

0.42 is the value tuned for ArcFace (buffalo_l). dlib recommends a euclidean distance of 0.6 on its raw
128-d descriptors; those are not unit length (measured norms 1.27-1.49, ~1.38 typical), so on the
L2-normalised vectors we store that is a cosine distance of about 0.6**2 / (2 * 1.38**2) = 0.095, not the
0.18 a unit-norm assumption gives. Measured on our test photos: same person <= 0.082, different >= 0.095.
"""


def distance_threshold(face: FaceSettings) -> float:
    """FACE_DISTANCE_THRESHOLD when the user set it, else the backend's own default."""
    if "distance_threshold" in face.model_fields_set:
        return face.distance_threshold
    return DEFAULT_DISTANCE_THRESHOLDS[face.backend]


def build_face_analyzer(
    face: FaceSettings, providers: Sequence[str] | None = None, threads: int = 0
) -> FaceAnalyzer:
    """The backend FACE_BACKEND names, not loaded yet."""
    match face.backend:
        case "insightface":
            try:
                from shared.models.face.insightface_backend import InsightFaceAnalyzer
            except ImportError as exc:
                raise ConfigError(
                    f"FACE_BACKEND=insightface needs the insightface package ({exc.name} is missing): "
                    "pip install 'mindsight-ml[faces]', or use the full image"
                ) from exc
            from shared.models.store.locations import face_pack_dir

            return InsightFaceAnalyzer(
                face_pack_dir(face),
                providers=providers,
                min_score=face.min_score,
                det_size=face.det_size,
                threads=threads,
            )
        case "retinaface-dlib":
            from shared.models.face.retinaface_dlib_backend import RetinaFaceDlibAnalyzer

            return RetinaFaceDlibAnalyzer(
                providers=providers, min_score=face.min_score, det_size=face.det_size, threads=threads
            )
        case other:
            raise ConfigError(f"FACE_BACKEND={other!r} is not one of: insightface, retinaface-dlib")


def load_face_analyzer(
    face: FaceSettings, providers: Sequence[str] | None = None, threads: int = 0
) -> FaceAnalyzer:
    """Build and load the configured backend; a ConfigError if its dimension is not the configured one.

    `providers` are the ONNX Runtime providers (`shared.device.onnx_providers(MINDSIGHT_DEVICE)`); None
    means CUDA when available, then CPU.
    """
    analyzer = build_face_analyzer(face, providers, threads)
    if analyzer.dim:  # known before loading (dlib): refuse without paying for the load
        _check_dim(face, analyzer.dim)
    analyzer.load()
    _check_dim(face, analyzer.dim)
    info = analyzer.runtime_info
    log.info(
        "face analyzer %s ready: runtime=%s device=%s dim=%d load=%.2fs",
        face.backend,
        info.runtime,
        info.device,
        analyzer.dim,
        analyzer.load_seconds or 0.0,
    )
    return analyzer


def _check_dim(face: FaceSettings, dim: int) -> None:
    """A ConfigError when the backend's dimension is not PROCESSING_FACE_EMBEDDING_DIM."""
    if dim == face.embedding_dim:
        return
    hint = (
        " (the retinaface-dlib backend produces 128-d dlib descriptors: set "
        "PROCESSING_FACE_EMBEDDING_DIM=128 and make the gallery's face vector column 128-d)"
        if face.backend == "retinaface-dlib"
        else ""
    )
    raise ConfigError(
        f"FACE_BACKEND={face.backend} produces {dim}-d face embeddings but "
        f"PROCESSING_FACE_EMBEDDING_DIM={face.embedding_dim}{hint}"
    )
