"""One typed contract for the internal callbacks: what the workers send, the reference gallery accepts."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from pydantic import ValidationError

from services.gallery import internal_routes
from shared.errors import ImageDecodeError
from shared.gallery_client import GalleryClient
from shared.gallery_contract import BBox, FaceIn, FacesIn, MlResultIn, TextQueryIn, failure_body
from shared.payloads import Capability
from shared.settings import GallerySettings
from tests.fixtures.gallery import GalleryServer, write_jpeg
from tests.fixtures.settings import TEST_TOKEN
from workers.delivery.outcomes import report_failed


@pytest.fixture
def client(gallery_server: GalleryServer) -> GalleryClient:
    settings = GallerySettings(api_base_url=gallery_server.url, internal_token=TEST_TOKEN, retries=0)  # type: ignore[call-arg]
    return GalleryClient(settings)


@pytest.mark.parametrize(
    ("capability", "modality"),
    [(Capability.CLIP, "image"), (Capability.CAPTION, "caption"), (Capability.FACE, "face")],
)
def test_every_failure_callback_is_accepted(
    gallery_server: GalleryServer,
    client: GalleryClient,
    tmp_path: Path,
    capability: Capability,
    modality: str,
) -> None:
    photo_id, path = gallery_server.add_photo(write_jpeg(tmp_path / "x.jpg"))
    payload = {"photo_id": photo_id, "user_id": 1, "path": path, "tasks": [capability.value]}
    report_failed(client, capability, payload, ImageDecodeError("truncated \ud800"), ["m1", "m2"])
    assert [r["status"] for r in gallery_server.received()] == [200, 200]
    rows = gallery_server.ml_results(photo_id)
    assert {(r["model"], r["modality"], r["status"]) for r in rows} == {
        ("m1", modality, "failed"),
        ("m2", modality, "failed"),
    }
    assert (
        "ImageDecodeError" in rows[0]["error"]
        and gallery_server.photo(photo_id)["processing_status"] == "failed"
    )


def test_faces_arriving_later_replace_a_face_failure(
    gallery_server: GalleryServer, client: GalleryClient, tmp_path: Path
) -> None:
    photo_id, _ = gallery_server.add_photo(write_jpeg(tmp_path / "x.jpg"))
    client.post_ml_result(photo_id, failure_body("face", "arcface", "JobTimeoutException", "slow"))
    face = FaceIn(embedding=[0.1, 0.2], model="arcface", bbox=BBox(x1=1, y1=2, x2=3, y2=4), score=0.9)
    client.post_faces(photo_id, [face])
    assert gallery_server.ml_results(photo_id) == []
    assert len(gallery_server.faces(photo_id)) == 1
    assert gallery_server.photo(photo_id)["processing_status"] != "failed"


def test_the_gallery_validates_with_the_classes_the_client_sends() -> None:
    hints = {
        name: inspect.signature(getattr(internal_routes, name)).parameters["body"].annotation
        for name in ("post_ml_result", "post_faces", "post_text_query")
    }
    resolved = {k: getattr(internal_routes, v) if isinstance(v, str) else v for k, v in hints.items()}
    assert resolved == {"post_ml_result": MlResultIn, "post_faces": FacesIn, "post_text_query": TextQueryIn}


@pytest.mark.parametrize(
    "body",
    [
        {"model": "m", "modality": "face", "embedding": [1.0], "processing_status": "done"},
        {"model": "m", "modality": "image", "processing_status": "done"},
        {"model": "m", "modality": "image", "embedding": [float("nan")], "processing_status": "done"},
        {"model": "", "modality": "image", "embedding": [1.0], "processing_status": "done"},
    ],
)
def test_bodies_the_gallery_would_refuse_cannot_be_built(body: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        MlResultIn.model_validate(body)
