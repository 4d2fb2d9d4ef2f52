"""Caption, face and text workers through the real pipeline, with real architectures and real face weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from services.embed_api.app import create_app
from shared.settings import EmbedApiSettings
from tests.fixtures.pipeline import Pipeline

pytestmark = pytest.mark.slow

DLIB_FACES = {
    "FACE_BACKEND": "retinaface-dlib",
    "PROCESSING_FACE_EMBEDDING_DIM": "128",
    "PROCESSING_DEFAULT_FACE_MODEL": "dlib-resnet",
    "FACE_MIN_SCORE": "0.5",
}


def test_caption_worker_posts_caption_and_its_clip_text_embedding(
    pipeline: Pipeline, tiny_blip_dir: Path, face_photos: dict[str, Path]
) -> None:
    env = {"CAPTION_ENABLED": "1", "CAPTION_MODEL_NAME": str(tiny_blip_dir), "CAPTION_MAX_LENGTH": "12"}
    photo_id, path = pipeline.gallery.add_photo(face_photos["astronaut"])
    pipeline.push_photo(photo_id, path, ["thumbnail", "clip"])  # clip implies caption when enabled
    pipeline.router(**env)
    pipeline.worker("caption", **env)

    def captioned() -> bool:
        return any(r["modality"] == "caption" for r in pipeline.gallery.ml_results(photo_id))

    pipeline.wait_for(captioned, 120, "the caption callback")
    body = next(r["body"] for r in pipeline.gallery.received() if r["body"].get("modality") == "caption")
    assert body["model"] == "tiny-hf"  # the first configured CLIP label embeds captions
    assert body["processing_status"] == "done"
    assert isinstance(body["caption"], str) and body["caption"].strip()
    assert len(body["caption"].split()) <= 12
    vec = np.asarray(body["embedding"], dtype=np.float32)
    assert vec.shape == (int(pipeline.base_env["PROCESSING_EMBEDDING_DIM"]),)
    assert abs(np.linalg.norm(vec) - 1) < 1e-4
    assert body["ml_result"]["caption_model"] == str(tiny_blip_dir)


def test_face_worker_posts_faces_in_the_displayed_frame(
    pipeline: Pipeline, face_photos: dict[str, Path], tmp_path: Path
) -> None:
    big = Image.open(face_photos["astronaut"]).resize((3000, 3000), Image.Resampling.BICUBIC)
    upright = tmp_path / "upright.jpg"
    big.save(upright, quality=92)
    # Same pixels stored sideways with EXIF orientation 6: viewers rotate it back to `upright`.
    sideways = tmp_path / "sideways.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    big.transpose(Image.Transpose.ROTATE_90).save(sideways, quality=92, exif=exif)

    ids = {}
    for name, src in {"upright": upright, "sideways": sideways, "cat": face_photos["chelsea"]}.items():
        ids[name], path = pipeline.gallery.add_photo(src)
        pipeline.push_photo(ids[name], path, ["face"])
    pipeline.router()
    pipeline.worker("face", **DLIB_FACES)

    def posted(pid: int) -> bool:
        return any(
            r["path"].endswith(f"/photos/{pid}/faces") and r["status"] == 200
            for r in pipeline.gallery.received()
        )

    pipeline.wait_for(lambda: all(posted(i) for i in ids.values()), 180, "three face callbacks")
    assert pipeline.gallery.faces(ids["cat"]) == []
    [a] = pipeline.gallery.faces(ids["upright"])
    [b] = pipeline.gallery.faces(ids["sideways"])
    box_a = np.array([a["bbox"][k] for k in ("x1", "y1", "x2", "y2")])
    box_b = np.array([b["bbox"][k] for k in ("x1", "y1", "x2", "y2")])
    # Full-resolution pixels of the displayed photo: the astronaut's face is in the upper middle.
    assert 900 < (box_a[0] + box_a[2]) / 2 < 1800 and 150 < (box_a[1] + box_a[3]) / 2 < 1200
    assert np.abs(box_a - box_b).max() < 60, (box_a, box_b)
    assert a["model"] == "dlib-resnet" and len(a["embedding"]) == 128 and len(a["landmarks"]) == 5
    cos = float(np.dot(a["embedding"], b["embedding"]))
    assert cos > 0.95


def test_text_worker_and_embed_api_agree(
    pipeline: Pipeline, tiny_clip_models: dict, face_photos: dict[str, Path]
) -> None:
    queries = {11: ("a cat on the beach", None), 12: ("an astronaut", "tiny-oc"), 13: ("x", "no-such-model")}
    for request_id, (query, model) in queries.items():
        job = {"type": "text_embed", "request_id": request_id, "query": query}
        if model:
            job["model"] = model
        pipeline.redis.lpush("text_tasks", json.dumps(job))
    pipeline.router()
    pipeline.worker("text")
    pipeline.wait_for(
        lambda: (
            pipeline.gallery.text_query(11)
            and pipeline.gallery.text_query(12)
            and pipeline.redis.llen("text_tasks_dlq") == 1
        ),
        120,
        "two text results and one dead letter",
    )

    api = TestClient(create_app(tiny_clip_models, "tiny-hf", EmbedApiSettings(_env_file=None)))
    for request_id, (query, model) in list(queries.items())[:2]:
        stored = pipeline.gallery.text_query(request_id)
        assert stored is not None
        served = api.post("/embed_text", json={"text": query, **({"model": model} if model else {})}).json()
        assert stored["model"] == served["model"] == (model or "tiny-hf")
        assert np.allclose(stored["embedding"], served["embedding"], atol=1e-5)
        image_vec = tiny_clip_models[served["model"]].image.predict([Image.open(face_photos["astronaut"])])[0]
        assert len(served["embedding"]) == served["dim"] == image_vec.shape[0]
    [letter] = pipeline.dead_letters("text_tasks_dlq")
    assert (
        letter["error_type"] == "UnknownModel"
        and "tiny-hf" in letter["error"]
        and "tiny-oc" in letter["error"]
    )
