"""Choosing the face backend from settings, the dimension check, per-backend distance thresholds."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from shared.errors import ConfigError
from shared.models.face.insightface_backend import InsightFaceAnalyzer
from shared.models.face.registry import distance_threshold, load_face_analyzer
from shared.settings import Settings

CPU = ["CPUExecutionProvider"]


def test_insightface_from_a_local_pack(
    make_settings: Callable[..., Settings], insightface_model_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(FACE_MODEL_DIR=str(insightface_model_root), FACE_MIN_SCORE="0.7")
    with caplog.at_level(logging.INFO, logger="shared.models.face.registry"):
        analyzer = load_face_analyzer(settings.face, CPU)
    assert isinstance(analyzer, InsightFaceAnalyzer)
    assert analyzer.loaded and analyzer.dim == 512 and analyzer.min_score == 0.7
    assert "runtime=onnxruntime device=CPUExecutionProvider dim=512" in caplog.text


def test_insightface_dimension_mismatch(
    make_settings: Callable[..., Settings], insightface_model_root: Path
) -> None:
    settings = make_settings(FACE_MODEL_DIR=str(insightface_model_root), PROCESSING_FACE_EMBEDDING_DIM="768")
    with pytest.raises(ConfigError, match="produces 512-d .* PROCESSING_FACE_EMBEDDING_DIM=768"):
        load_face_analyzer(settings.face, CPU)


def test_insightface_missing_pack_names_the_folder(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings(FACE_MODEL_DIR=str(tmp_path / "nowhere"), FACE_MODEL_NAME="antelopev2")
    with pytest.raises(ConfigError, match=str(tmp_path / "nowhere" / "antelopev2")):
        load_face_analyzer(settings.face, CPU)


def test_dlib_backend_needs_128(make_settings: Callable[..., Settings]) -> None:
    pytest.importorskip("dlib")
    settings = make_settings(FACE_BACKEND="retinaface-dlib")
    with pytest.raises(ConfigError, match="128-d dlib descriptors: set PROCESSING_FACE_EMBEDDING_DIM=128"):
        load_face_analyzer(settings.face, CPU)
    settings = make_settings(FACE_BACKEND="retinaface-dlib", PROCESSING_FACE_EMBEDDING_DIM="128")
    analyzer = load_face_analyzer(settings.face, CPU)
    assert analyzer.dim == 128 and analyzer.runtime_info.runtime == "onnxruntime+dlib"


def test_unknown_backend_is_a_config_error(make_settings: Callable[..., Settings]) -> None:
    with pytest.raises(ConfigError):
        make_settings(FACE_BACKEND="facenet")


def test_distance_threshold_defaults_per_backend(make_settings: Callable[..., Settings]) -> None:
    assert distance_threshold(make_settings(FACE_DISTANCE_THRESHOLD=None).face) == 0.42
    dlib = make_settings(FACE_BACKEND="retinaface-dlib", FACE_DISTANCE_THRESHOLD=None).face
    assert distance_threshold(dlib) == 0.09
    explicit = make_settings(FACE_BACKEND="retinaface-dlib", FACE_DISTANCE_THRESHOLD="0.42").face
    assert distance_threshold(explicit) == 0.42
