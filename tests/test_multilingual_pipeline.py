"""A mixed English + Chinese-CLIP gallery through the real pipeline: router and workers as processes,
real Redis, the reference gallery over HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from services.embed_api.app import create_app
from shared.models.clip.registry import ClipModel
from shared.settings import EmbedApiSettings
from tests.fixtures.gallery import GalleryServer
from tests.fixtures.pipeline import Pipeline

pytestmark = pytest.mark.slow


@pytest.fixture
def mixed_pipeline(
    redis_url: str, gallery_server: GalleryServer, mixed_clip_env: dict[str, str], tmp_path: Path
) -> Iterator[Pipeline]:
    """The pipeline with CLIP_MODELS=clip14=<English CLIP>,cn=<Chinese-CLIP>."""
    workdir = tmp_path / "run"
    workdir.mkdir()
    p = Pipeline(redis_url, gallery_server, mixed_clip_env, workdir)
    try:
        yield p
    finally:
        p.stop_all()


def test_each_photo_gets_one_ml_result_per_label(
    mixed_pipeline: Pipeline, mixed_clip_models: dict[str, ClipModel], face_photos: dict[str, Path]
) -> None:
    ids = {}
    for name in ("astronaut", "chelsea"):
        ids[name], path = mixed_pipeline.gallery.add_photo(face_photos[name])
        mixed_pipeline.push_photo(ids[name], path, ["clip"])
    mixed_pipeline.router()
    mixed_pipeline.worker("clip")

    def embedded() -> bool:
        return all(len(mixed_pipeline.gallery.ml_results(i)) == 2 for i in ids.values())

    mixed_pipeline.wait_for(embedded, 120, "two ml_results per photo")
    for photo_id in ids.values():
        results = mixed_pipeline.gallery.ml_results(photo_id)
        assert sorted((r["model"], r["modality"], r["status"]) for r in results) == [
            ("clip14", "image", "done"),
            ("cn", "image", "done"),
        ]
    posts = [r["body"] for r in mixed_pipeline.gallery.received() if r["body"].get("modality") == "image"]
    assert sorted(b["model"] for b in posts) == ["clip14", "clip14", "cn", "cn"]
    by_label = {b["model"]: np.asarray(b["embedding"]) for b in posts}
    assert not np.allclose(by_label["clip14"], by_label["cn"], atol=1e-3)  # two models, two vectors


def test_queue_worker_and_embed_api_give_the_same_vector_for_a_chinese_query(
    mixed_pipeline: Pipeline, mixed_clip_models: dict[str, ClipModel]
) -> None:
    queries = {21: ("一只猫", "cn"), 22: ("海边的日落", "cn"), 23: ("a cat on the beach", None)}
    for request_id, (query, model) in queries.items():
        job = {"type": "text_embed", "request_id": request_id, "query": query}
        mixed_pipeline.redis.lpush("text_tasks", json.dumps({**job, **({"model": model} if model else {})}))
    mixed_pipeline.router()
    mixed_pipeline.worker("text")
    mixed_pipeline.wait_for(
        lambda: all(mixed_pipeline.gallery.text_query(i) for i in queries), 120, "three text results"
    )
    api = TestClient(create_app(mixed_clip_models, "clip14", EmbedApiSettings(_env_file=None)))  # type: ignore[call-arg]
    for request_id, (query, model) in queries.items():
        stored = mixed_pipeline.gallery.text_query(request_id)
        assert stored is not None
        served = api.post("/embed_text", json={"text": query, **({"model": model} if model else {})}).json()
        direct = mixed_clip_models[model or "clip14"].text.predict([query])[0]
        assert stored["model"] == served["model"] == (model or "clip14")
        np.testing.assert_allclose(stored["embedding"], served["embedding"], atol=1e-5)
        np.testing.assert_allclose(served["embedding"], direct, atol=1e-5)


def test_captions_are_embedded_by_the_first_label_a_chinese_clip(
    mixed_pipeline: Pipeline,
    mixed_clip_models: dict[str, ClipModel],
    tiny_blip_dir: Path,
    face_photos: dict[str, Path],
    tiny_chinese_clip_dir: Path,
    tiny_transformers_clip_dir: Path,
) -> None:
    env = {
        "CLIP_MODELS": f"cn={tiny_chinese_clip_dir},clip14={tiny_transformers_clip_dir}",
        "PROCESSING_DEFAULT_MODEL": "cn",
        "CAPTION_ENABLED": "1",
        "CAPTION_MODEL_NAME": str(tiny_blip_dir),
        "CAPTION_MAX_LENGTH": "12",
    }
    photo_id, path = mixed_pipeline.gallery.add_photo(face_photos["astronaut"])
    mixed_pipeline.push_photo(photo_id, path, ["caption"])
    mixed_pipeline.router(**env)
    mixed_pipeline.worker("caption", **env)

    def captioned() -> bool:
        return any(r["modality"] == "caption" for r in mixed_pipeline.gallery.ml_results(photo_id))

    mixed_pipeline.wait_for(captioned, 120, "the caption callback")
    body = next(
        b for b in (r["body"] for r in mixed_pipeline.gallery.received()) if b.get("modality") == "caption"
    )
    assert body["model"] == "cn" and body["processing_status"] == "done"
    expected = mixed_clip_models["cn"].text.predict([body["caption"]])[0]
    np.testing.assert_allclose(body["embedding"], expected, atol=1e-5)
