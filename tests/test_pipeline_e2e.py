"""End to end: LPUSH on photo_tasks -> router -> RQ -> CLIP worker -> gallery -> vector search."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shared.gallery_client import GalleryClient
from shared.settings import GallerySettings
from tests.fixtures.pipeline import Pipeline

pytestmark = pytest.mark.slow
LABELS = {"tiny-hf", "tiny-oc"}


def sample_photos(tmp_path: Path) -> list[Path]:
    from skimage import data

    out = []
    for name in ("astronaut", "chelsea", "coffee"):
        path = tmp_path / f"{name}.jpg"
        Image.fromarray(getattr(data, name)()).save(path, quality=90)
        out.append(path)
    return out


def labels_done(pipeline: Pipeline, photo_id: int, labels: set[str]) -> bool:
    rows = pipeline.gallery.ml_results(photo_id)
    return {r["model"] for r in rows if r["modality"] == "image" and r["status"] == "done"} >= labels


def test_lpush_to_stored_embeddings_and_search(pipeline: Pipeline, tmp_path: Path) -> None:
    ids = []
    for src in sample_photos(tmp_path):
        photo_id, path = pipeline.gallery.add_photo(src)
        ids.append(photo_id)
        pipeline.push_photo(photo_id, path, ["thumbnail", "clip", "face"])  # face: no worker yet, must wait
    pipeline.router()
    pipeline.worker("clip")
    labels = LABELS
    pipeline.wait_for(lambda: all(labels_done(pipeline, i, labels) for i in ids), 90, "CLIP callbacks")

    for photo_id in ids:
        rows = {r["model"]: r for r in pipeline.gallery.ml_results(photo_id)}
        for label in labels:
            vec = np.asarray(rows[label]["embedding"], dtype=np.float32)
            assert vec.shape == (int(pipeline.base_env["PROCESSING_EMBEDDING_DIM"]),)
            assert abs(float(np.linalg.norm(vec)) - 1.0) < 1e-4
            assert rows[label]["ml_result"]["source"] == "mindsight-ml"
            assert rows[label]["ml_result"]["device"] == "cpu"
    # The face capability was fanned out to its own queue and waits there for a face worker.
    assert pipeline.redis.llen("rq:queue:face") >= 1
    assert pipeline.dead_letters() == []

    user = GalleryClient(
        GallerySettings(
            API_BASE_URL=pipeline.gallery.url, ACCESS_TOKEN=pipeline.gallery.access_token, _env_file=None
        ),
        internal=False,
    )
    for photo_id in ids:
        own = {r["model"]: r for r in pipeline.gallery.ml_results(photo_id)}["tiny-oc"]["embedding"]
        hits = user.search_vector(own, model="tiny-oc", modality="image", limit=3)
        assert hits[0]["photo"]["id"] == photo_id
        assert hits[0]["distance"] < 1e-4


def test_same_photo_same_vector_through_both_families(pipeline: Pipeline, tmp_path: Path) -> None:
    """Two photos with identical pixels get identical vectors: the pipeline adds no noise."""
    src = sample_photos(tmp_path)[0]
    a, path_a = pipeline.gallery.add_photo(src)
    b, path_b = pipeline.gallery.add_photo(src)
    pipeline.push_photo(a, path_a)
    pipeline.push_photo(b, path_b)
    pipeline.router()
    pipeline.worker("clip")
    pipeline.wait_for(
        lambda: labels_done(pipeline, a, LABELS) and labels_done(pipeline, b, LABELS), 90, "both photos"
    )
    va = {r["model"]: r["embedding"] for r in pipeline.gallery.ml_results(a)}
    vb = {r["model"]: r["embedding"] for r in pipeline.gallery.ml_results(b)}
    for label in ("tiny-hf", "tiny-oc"):
        assert np.allclose(va[label], vb[label], atol=1e-6)


def test_onnx_int8_worker_runs_without_torch(
    pipeline: Pipeline, tmp_path: Path, tiny_clip_models: dict
) -> None:
    """Exported int8 models serve the same pipeline; the worker process never loads torch."""
    import subprocess
    import sys

    export = subprocess.run(
        [sys.executable, "-m", "mindsight", "--env-file", "/dev/null", "models", "export", "--all", "--int8"],
        env=pipeline.env(),
        cwd=pipeline.workdir,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert export.returncode == 0, export.stdout + export.stderr
    src = sample_photos(tmp_path)[0]
    photo_id, path = pipeline.gallery.add_photo(src)
    pipeline.push_photo(photo_id, path)
    onnx = {"MINDSIGHT_CLIP_RUNTIME": "onnx", "MINDSIGHT_CLIP_PRECISION": "int8"}
    pipeline.router()
    worker = pipeline.worker("clip", **onnx)
    pipeline.wait_for(lambda: labels_done(pipeline, photo_id, LABELS), 90, "ONNX callbacks")

    maps = Path(f"/proc/{worker.pid}/maps").read_text()
    assert "libtorch" not in maps and "onnxruntime" in maps
    rows = {r["model"]: r for r in pipeline.gallery.ml_results(photo_id)}
    for label in LABELS:
        assert rows[label]["ml_result"]["runtime"] == "onnxruntime"
        assert rows[label]["ml_result"]["device"] == "CPUExecutionProvider"
        assert rows[label]["ml_result"]["model_name"] == tiny_clip_models[label].source  # not the export dir
        torch_vec = tiny_clip_models[label].image.predict([Image.open(src).convert("RGB")])[0]
        assert float(np.dot(torch_vec, rows[label]["embedding"])) > 0.98
