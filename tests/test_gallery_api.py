"""The reference gallery over real HTTP: auth, callbacks, read-back, uploads, albums, search."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.gallery import GalleryServer, write_jpeg

Client = Callable[..., httpx.Client]


@pytest.fixture
def clients(gallery_server: GalleryServer) -> Iterator[Client]:
    """Factory of httpx clients on the test gallery: internal=True, or as user 1 / user 2."""
    made: list[httpx.Client] = []

    def make(internal: bool = False, user: int = 1, headers: dict[str, str] | None = None) -> httpx.Client:
        if headers is None:
            token = gallery_server.access_token if user == 1 else gallery_server.other_access_token
            headers = (
                {"x-internal-token": gallery_server.internal_token}
                if internal
                else {"authorization": f"Bearer {token}"}
            )
        client = httpx.Client(base_url=gallery_server.url, headers=headers, timeout=10)
        made.append(client)
        return client

    yield make
    for c in made:
        c.close()


def _result(vec: list[float], status: str = "done", **extra: Any) -> dict[str, Any]:
    return {"model": "clip-test", "modality": "image", "embedding": vec, "processing_status": status, **extra}


@pytest.fixture
def photo(gallery_server: GalleryServer, tmp_path: Path) -> int:
    pid, _ = gallery_server.add_photo(write_jpeg(tmp_path / "in" / "a.jpg"))
    return pid


@pytest.mark.parametrize(
    "headers", [{}, {"x-internal-token": "wrong"}, {"authorization": "Bearer test-access-token-user-1"}]
)
def test_internal_callbacks_need_the_internal_token(
    clients: Client, gallery_server: GalleryServer, photo: int, headers: dict[str, str]
) -> None:
    c = clients(headers=headers)
    for path, body in [
        (f"/api/internal/photos/{photo}/ml_result", _result([1.0])),
        (f"/api/internal/photos/{photo}/faces", {"faces": []}),
        ("/api/internal/text_queries/1", {"embedding": [1.0], "model": "m"}),
    ]:
        resp = c.post(path, json=body)
        assert resp.status_code == 401
        assert "x-internal-token" in resp.json()["error"]
    assert gallery_server.ml_results(photo) == [] and gallery_server.text_query(1) is None


def test_user_api_needs_a_known_bearer(clients: Client) -> None:
    for headers in [{}, {"authorization": "Bearer nope"}, {"authorization": "Basic dGVzdA=="}]:
        resp = clients(headers=headers).get("/api/photos")
        assert resp.status_code == 401 and "error" in resp.json()
    assert clients(internal=True).get("/api/photos").status_code == 401


def test_unknown_photo_is_404(clients: Client) -> None:
    c = clients(internal=True)
    assert c.post("/api/internal/photos/4242/ml_result", json=_result([1.0])).status_code == 404
    assert c.post("/api/internal/photos/4242/faces", json={"faces": []}).status_code == 404
    assert clients().get("/api/photos/4242").status_code == 404


def test_ml_result_upsert_is_idempotent_and_readable(
    clients: Client, gallery_server: GalleryServer, photo: int
) -> None:
    c = clients(internal=True)
    body = _result([0.25, -0.5, 1.0], ml_result={"runner": "test"}, unknown_field="ignored")
    for _ in range(2):
        resp = c.post(f"/api/internal/photos/{photo}/ml_result", json=body)
        assert resp.status_code == 200, resp.text
    caption = {
        "model": "clip-test",
        "modality": "caption",
        "embedding": [1.0, 0.0, 0.0],
        "processing_status": "done",
        "caption": "a red square",
    }
    assert c.post(f"/api/internal/photos/{photo}/ml_result", json=caption).status_code == 200

    rows = gallery_server.ml_results(photo)
    assert [(r["modality"], r["embedding"]) for r in rows] == [
        ("caption", [1.0, 0.0, 0.0]),
        ("image", [0.25, -0.5, 1.0]),
    ]
    detail = clients().get(f"/api/photos/{photo}").json()
    assert detail["processing_status"] == "done"
    assert {(r["modality"], r["dim"], r["status"], r["caption"]) for r in detail["ml_results"]} == {
        ("caption", 3, "done", "a red square"),
        ("image", 3, "done", None),
    }


def test_failed_result_without_embedding(clients: Client, gallery_server: GalleryServer, photo: int) -> None:
    c = clients(internal=True)
    failed = {"model": "clip-test", "modality": "image", "processing_status": "failed", "error": "bad image"}
    assert c.post(f"/api/internal/photos/{photo}/ml_result", json=failed).status_code == 200
    assert gallery_server.photo(photo)["processing_status"] == "failed"
    assert gallery_server.ml_results(photo)[0]["error"] == "bad image"


@pytest.mark.parametrize(
    "body",
    [
        {"model": "m", "modality": "image", "processing_status": "done"},  # done needs a vector
        {"model": "m", "modality": "video", "embedding": [1.0], "processing_status": "done"},
        {"model": "m", "modality": "image", "embedding": [1.0], "processing_status": "maybe"},
        {"modality": "image", "embedding": [1.0], "processing_status": "done"},
    ],
)
def test_malformed_ml_result_is_422(clients: Client, photo: int, body: dict[str, Any]) -> None:
    resp = clients(internal=True).post(f"/api/internal/photos/{photo}/ml_result", json=body)
    assert resp.status_code == 422 and resp.json()["error"].startswith("invalid request")


def test_faces_replace_and_empty_list(clients: Client, gallery_server: GalleryServer, photo: int) -> None:
    c = clients(internal=True)
    face = {
        "embedding": [0.1, 0.2],
        "model": "arc",
        "bbox": {"x1": 1, "y1": 2, "x2": 30, "y2": 40},
        "score": 0.97,
        "landmarks": [[5, 6], [7, 8]],
    }
    assert c.post(f"/api/internal/photos/{photo}/faces", json={"faces": [face, face]}).json()["faces"] == 2
    assert c.post(f"/api/internal/photos/{photo}/faces", json={"faces": [face]}).status_code == 200
    stored = gallery_server.faces(photo)
    assert len(stored) == 1
    assert stored[0]["bbox"] == {"x1": 1, "y1": 2, "x2": 30, "y2": 40}
    assert stored[0]["embedding"] == [0.1, 0.2] and stored[0]["landmarks"] == [[5, 6], [7, 8]]
    assert c.post(f"/api/internal/photos/{photo}/faces", json={"faces": []}).status_code == 200
    detail = clients().get(f"/api/photos/{photo}").json()
    assert detail["faces"] == [] and detail["faces_processed_at"] is not None


def test_text_query_roundtrip(clients: Client, gallery_server: GalleryServer) -> None:
    assert clients().get("/api/text_queries/7").status_code == 404
    body = {"embedding": [0.5, 0.5], "model": "clip-test"}
    assert clients(internal=True).post("/api/internal/text_queries/7", json=body).status_code == 200
    got = clients().get("/api/text_queries/7").json()
    assert got["embedding"] == [0.5, 0.5] and got["model"] == "clip-test"
    stored = gallery_server.text_query(7)
    assert stored is not None and stored["dim"] == 2


def test_upload_list_and_download(clients: Client, gallery_server: GalleryServer, tmp_path: Path) -> None:
    src = write_jpeg(tmp_path / "in" / "holiday pic.jpg")
    c = clients()
    resp = c.post("/api/photos", files={"file": (src.name, src.read_bytes(), "image/jpeg")})
    assert resp.status_code == 201, resp.text
    photo = resp.json()
    assert photo["path"].startswith("./uploads/original/") and photo["url"] == photo["path"][1:]
    assert (gallery_server.root / photo["path"]).read_bytes() == src.read_bytes()
    assert c.get(photo["url"]).content == src.read_bytes()
    assert clients(user=2).get(photo["url"]).status_code == 404  # not the owner
    bad = c.post("/api/photos", files={"file": ("notes.txt", b"hello", "text/plain")})
    assert bad.status_code == 400 and "unsupported" in bad.json()["error"]


def test_pagination_newest_first(clients: Client, gallery_server: GalleryServer, tmp_path: Path) -> None:
    src = write_jpeg(tmp_path / "in" / "p.jpg")
    ids = [gallery_server.add_photo(src)[0] for _ in range(5)]
    gallery_server.add_photo(src, user_id=2)
    c = clients()
    first = c.get("/api/photos", params={"limit": 2}).json()
    assert first["total"] == 5 and [p["id"] for p in first["items"]] == ids[::-1][:2]
    rest = c.get("/api/photos", params={"limit": 2, "offset": 2}).json()["items"]
    last = c.get("/api/photos", params={"limit": 2, "offset": 4}).json()["items"]
    assert [p["id"] for p in rest + last] == ids[::-1][2:]
    assert set(first["items"][0]) >= {"id", "user_id", "url", "path", "created_at", "processing_status"}
    assert c.get("/api/photos", params={"limit": 0}).status_code == 422


def test_albums_create_and_list(clients: Client, gallery_server: GalleryServer, tmp_path: Path) -> None:
    src = write_jpeg(tmp_path / "in" / "p.jpg")
    a, b = gallery_server.add_photo(src)[0], gallery_server.add_photo(src)[0]
    foreign = gallery_server.add_photo(src, user_id=2)[0]
    c = clients()
    created = c.post("/api/albums", json={"name": "Person 1", "description": "auto", "photo_ids": [b, a]})
    assert created.status_code == 201
    assert created.json()["photo_ids"] == [b, a]
    assert c.post("/api/albums", json={"name": "x", "photo_ids": [a, foreign]}).status_code == 404
    assert c.post("/api/albums", json={"name": "x", "photo_ids": [99999]}).status_code == 404
    assert c.post("/api/albums", json={"name": "  ", "photo_ids": [a]}).status_code == 422
    items = c.get("/api/albums").json()["items"]
    assert [(i["name"], i["description"], i["photo_ids"]) for i in items] == [("Person 1", "auto", [b, a])]
    assert clients(user=2).get("/api/albums").json()["items"] == []


def test_album_photos_are_appended_once(
    clients: Client, gallery_server: GalleryServer, tmp_path: Path
) -> None:
    """The optional POST /api/albums/{id}/photos: appends in order, skips ids already in, owner only."""
    src = write_jpeg(tmp_path / "in" / "p.jpg")
    a, b, c_id = (gallery_server.add_photo(src)[0] for _ in range(3))
    foreign = gallery_server.add_photo(src, user_id=2)[0]
    c = clients()
    album = c.post("/api/albums", json={"name": "Person 1", "photo_ids": [a]}).json()
    grown = c.post(f"/api/albums/{album['id']}/photos", json={"photo_ids": [c_id, a, b, c_id]})
    assert grown.status_code == 200 and grown.json()["photo_ids"] == [a, c_id, b]
    assert c.post(f"/api/albums/{album['id']}/photos", json={"photo_ids": [b]}).json()["photo_ids"] == [
        a,
        c_id,
        b,
    ]
    assert c.post(f"/api/albums/{album['id']}/photos", json={"photo_ids": [foreign]}).status_code == 404
    assert c.post("/api/albums/99999/photos", json={"photo_ids": [a]}).status_code == 404
    assert c.post(f"/api/albums/{album['id']}/photos", json={"photo_ids": []}).status_code == 422
    other = clients(user=2)
    assert other.post(f"/api/albums/{album['id']}/photos", json={"photo_ids": [foreign]}).status_code == 404
    assert c.get("/api/albums").json()["items"][0]["photo_ids"] == [a, c_id, b]


def test_vector_search_finds_own_embedding_first(
    clients: Client, gallery_server: GalleryServer, tmp_path: Path
) -> None:
    src = write_jpeg(tmp_path / "in" / "p.jpg")
    vecs: list[list[float]] = [[1, 0, 0], [0.6, 0.8, 0], [0, 0, 1]]
    vectors = {gallery_server.add_photo(src)[0]: v for v in vecs}
    foreign = gallery_server.add_photo(src, user_id=2)[0]
    internal = clients(internal=True)
    for pid, vec in [*vectors.items(), (foreign, [1.0, 0.0, 0.0])]:
        assert internal.post(f"/api/internal/photos/{pid}/ml_result", json=_result(vec)).status_code == 200
    c = clients()
    for pid, vec in vectors.items():
        hits = c.post("/api/search/vector", json={"embedding": vec, "model": "clip-test"}).json()
        assert hits[0]["photo"]["id"] == pid and hits[0]["distance"] == pytest.approx(0.0, abs=1e-9)
        assert [h["distance"] for h in hits] == sorted(h["distance"] for h in hits)
        assert foreign not in {h["photo"]["id"] for h in hits}
    limited = c.post("/api/search/vector", json={"embedding": [1, 0, 0], "model": "clip-test", "limit": 2})
    assert len(limited.json()) == 2
    assert c.post("/api/search/vector", json={"embedding": [1, 0], "model": "clip-test"}).status_code == 400
    assert (
        c.post(
            "/api/search/vector", json={"embedding": [1, 0, 0], "model": "clip-test", "modality": "caption"}
        ).json()
        == []
    )
    assert c.post("/api/search/vector", json={"embedding": [1, 0], "model": "unknown"}).json() == []


def test_dimension_mismatch_on_ingest_is_400(
    clients: Client, gallery_server: GalleryServer, tmp_path: Path
) -> None:
    src = write_jpeg(tmp_path / "in" / "p.jpg")
    a, b = gallery_server.add_photo(src)[0], gallery_server.add_photo(src)[0]
    c = clients(internal=True)
    assert c.post(f"/api/internal/photos/{a}/ml_result", json=_result([1.0, 0.0])).status_code == 200
    resp = c.post(f"/api/internal/photos/{b}/ml_result", json=_result([1.0, 0.0, 0.0]))
    assert resp.status_code == 400 and "dimension" in resp.json()["error"]


def test_healthz(clients: Client) -> None:
    assert clients(headers={}).get("/healthz").json() == {"status": "ok"}
