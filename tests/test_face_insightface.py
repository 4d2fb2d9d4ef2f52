"""The insightface backend's loading, SCRFD decoding and ArcFace path, on a tiny buffalo_l-shaped pack."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shared.errors import ConfigError
from shared.images import load_image
from shared.models.face.insightface_backend import InsightFaceAnalyzer
from tests.fixtures.faces import FAKE_BOX_DIST, FAKE_KPS

CPU = ["CPUExecutionProvider"]


def _analyzer(pack: Path, **kw: object) -> InsightFaceAnalyzer:
    model = InsightFaceAnalyzer(pack, providers=CPU, **kw)  # type: ignore[arg-type]
    model.load()
    return model


def _square_image(width: int, height: int, cell: tuple[int, int], scale: float) -> Image.Image:
    """Black image with a white square covering stride-32 cell (col, row) of the 640x640 letterboxed input."""
    img = np.zeros((height, width, 3), np.uint8)
    col, row = cell
    x0, y0 = round(col * 32 / scale), round(row * 32 / scale)
    side = round(32 / scale)
    img[y0 : y0 + side, x0 : x0 + side] = 255
    return Image.fromarray(img)


def _expected(cell: tuple[int, int], scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Box and landmarks the fake detector must decode to, in the source image's pixels."""
    centre = np.array(cell, dtype=np.float64) * 32  # SCRFD anchor centres sit on cell corners
    box = np.hstack([centre - FAKE_BOX_DIST * 32, centre + FAKE_BOX_DIST * 32]) / scale
    return box, (centre + FAKE_KPS * 32) / scale


@pytest.mark.parametrize(
    ("size", "cell"),
    [((1280, 960), (6, 4)), ((480, 800), (9, 12)), ((640, 640), (3, 17))],
    ids=["landscape-2x", "portrait", "exact"],
)
def test_decoded_box_and_landmarks_are_in_image_pixels(
    insightface_model_root: Path, size: tuple[int, int], cell: tuple[int, int]
) -> None:
    model = _analyzer(insightface_model_root / "buffalo_l")
    scale = 640 / max(size)
    faces = model.predict([_square_image(*size, cell, scale)])[0]
    assert len(faces) == 1
    box, kps = _expected(cell, scale)
    np.testing.assert_allclose(faces[0].bbox, np.clip(box, 0, [size[0], size[1]] * 2), atol=1e-3)
    np.testing.assert_allclose(faces[0].landmarks, kps, atol=1e-3)
    assert faces[0].score > 0.9
    assert faces[0].embedding.shape == (512,) and faces[0].embedding.dtype == np.float32
    assert np.linalg.norm(faces[0].embedding) == pytest.approx(1.0, abs=1e-5)
    assert model.dim == 512


def test_no_face_and_min_score(insightface_model_root: Path, face_photos: dict[str, Path]) -> None:
    model = _analyzer(insightface_model_root / "buffalo_l", min_score=0.5)
    assert model.predict([Image.new("RGB", (300, 200))]) == [[]]
    strict = _analyzer(insightface_model_root / "buffalo_l", min_score=0.999)
    assert strict.predict([_square_image(640, 640, (5, 5), 1.0)]) == [[]]
    # a real photo runs through the same path without error (random weights: no claim on what it finds)
    assert isinstance(model.predict([load_image(face_photos["astronaut"])])[0], list)


def test_embeddings_follow_the_face_content(insightface_model_root: Path) -> None:
    """Same chip, same vector; different pixels under the landmarks, different vector."""
    model = _analyzer(insightface_model_root / "buffalo_l")
    base = np.zeros((640, 640, 3), np.uint8)
    base[160:192, 160:192] = 255
    textured = base.copy()
    textured[130:150, 140:200] = 90  # inside the chip, outside the scoring cell
    a1, a2, b = (model.predict([Image.fromarray(x)])[0][0].embedding for x in (base, base, textured))
    assert float(a1 @ a2) == pytest.approx(1.0, abs=1e-6)
    assert float(a1 @ b) < 0.9999


def test_models_are_identified_by_signature_not_name(insightface_model_root: Path, tmp_path: Path) -> None:
    """Renamed files are still told apart, and the genderage-shaped decoy is skipped."""
    pack = tmp_path / "renamed"
    pack.mkdir()
    src = insightface_model_root / "buffalo_l"
    shutil.copy(src / "det_10g.onnx", pack / "c_scrfd.onnx")
    shutil.copy(src / "w600k_r50.onnx", pack / "b_arcface.onnx")
    shutil.copy(src / "genderage.onnx", pack / "a_genderage.onnx")
    model = _analyzer(pack)
    assert model.runtime_info.extra["files"] == ["c_scrfd.onnx", "b_arcface.onnx"]
    assert len(model.predict([_square_image(640, 640, (5, 5), 1.0)])[0]) == 1


def test_batched_recogniser_graph(insightface_pack_factory: Callable[..., Path]) -> None:
    root = insightface_pack_factory(batch_dynamic=True)
    model = _analyzer(root / "buffalo_l")
    assert model.embedder is not None and model.embedder.batched
    img = np.zeros((640, 640, 3), np.uint8)
    img[64:96, 64:96] = img[320:352, 448:480] = 255
    faces = model.predict([Image.fromarray(img)])[0]
    assert len(faces) == 2 and all(np.linalg.norm(f.embedding) == pytest.approx(1.0, abs=1e-5) for f in faces)


def test_missing_folder_or_models_name_the_fix(insightface_model_root: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist.*mindsight models download") as err:
        _analyzer(tmp_path / "buffalo_l")
    assert str(tmp_path / "buffalo_l") in str(err.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no .onnx files"):
        _analyzer(tmp_path / "empty")
    only_det = tmp_path / "only_det"
    only_det.mkdir()
    shutil.copy(insightface_model_root / "buffalo_l" / "det_10g.onnx", only_det / "det_10g.onnx")
    with pytest.raises(ConfigError, match="no a recogniser"):
        _analyzer(only_det)
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "det_10g.onnx").write_bytes(b"not a model")
    with pytest.raises(ConfigError, match="cannot load ONNX model"):
        _analyzer(corrupt)


def test_detector_without_keypoints_is_refused(insightface_pack_factory: Callable[..., Path]) -> None:
    root = insightface_pack_factory(kps=False)
    with pytest.raises(ConfigError, match="6 outputs and predicts no landmarks"):
        _analyzer(root / "buffalo_l")


def test_same_faces_and_chips_as_insightface_on_the_full_photo(insightface_model_root: Path) -> None:
    """Our pre-shrink and box mapping agree with insightface's own SCRFD letterboxing the full photo, and the
    embedded chip is `norm_crop` of the photo at the found landmarks."""
    import onnxruntime as ort
    from insightface.model_zoo.scrfd import SCRFD
    from insightface.utils.face_align import norm_crop

    pack = insightface_model_root / "buffalo_l"
    model = _analyzer(pack)
    scale = 640 / 1280
    photo = _square_image(1280, 960, (6, 4), scale)
    (face,) = model.predict([photo])[0]
    reference = SCRFD(session=ort.InferenceSession(str(pack / "det_10g.onnx"), providers=CPU))
    boxes, kpss = reference.detect(
        np.asarray(photo)[:, :, ::-1].copy(), input_size=(640, 640), det_thresh=0.5
    )
    assert len(boxes) == 1 and kpss is not None
    np.testing.assert_allclose(face.bbox, boxes[0, :4], atol=1e-3)
    np.testing.assert_allclose(face.landmarks, kpss[0], atol=1e-3)
    assert model.embedder is not None
    chip = norm_crop(np.asarray(photo), np.asarray(face.landmarks, dtype=np.float32), image_size=112)
    np.testing.assert_allclose(model.embedder.embed([chip])[0], face.embedding, atol=1e-6)
