"""GalleryClient against the real reference gallery: status mapping, retries, user API."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from shared.errors import GalleryAuthError, GalleryRejected, GalleryUnavailable
from shared.gallery_client import GalleryClient
from shared.gallery_contract import MlResultIn
from shared.settings import Settings
from tests.fixtures.gallery import GalleryServer, write_jpeg

ClientFactory = Callable[..., GalleryClient]


@pytest.fixture
def make_client(
    gallery_server: GalleryServer, make_settings: Callable[..., Settings]
) -> Iterator[ClientFactory]:
    """GalleryClient on the test gallery with tiny retry sleeps; env overrides per call."""
    made: list[GalleryClient] = []

    def build(internal: bool = True, **env: object) -> GalleryClient:
        settings = make_settings(**{**gallery_server.env(), "MINDSIGHT_GALLERY_RETRIES": 3, **env})
        client = GalleryClient(settings.gallery, internal=internal, retry_base_s=0.01)
        made.append(client)
        return client

    yield build
    for c in made:
        c.close()


@pytest.fixture
def photo(gallery_server: GalleryServer, tmp_path: Path) -> int:
    return gallery_server.add_photo(write_jpeg(tmp_path / "in" / "a.jpg"))[0]


def _result(vec: list[float]) -> MlResultIn:
    return MlResultIn(model="m", modality="image", embedding=vec, processing_status="done")


def test_wrong_token_is_auth_error_without_retries(
    make_client: ClientFactory, gallery_server: GalleryServer, photo: int
) -> None:
    client = make_client(PROCESSING_INTERNAL_TOKEN="a-wrong-but-real-looking-token")
    with pytest.raises(GalleryAuthError):
        client.post_ml_result(photo, _result([1.0]))
    assert [r["status"] for r in gallery_server.received()] == [401]


def test_persistent_500_is_unavailable_after_retries(
    make_client: ClientFactory, gallery_server: GalleryServer, photo: int
) -> None:
    gallery_server.set_fault(status=500)
    with pytest.raises(GalleryUnavailable, match="500"):
        make_client().post_faces(photo, [])
    assert [r["status"] for r in gallery_server.received()] == [500] * 4  # 1 try + 3 retries


def test_unknown_photo_is_rejected(make_client: ClientFactory) -> None:
    with pytest.raises(GalleryRejected, match="404"):
        make_client().post_ml_result(98765, _result([1.0]))


def test_one_500_then_success_thanks_to_retry(
    make_client: ClientFactory, gallery_server: GalleryServer, photo: int
) -> None:
    gallery_server.set_fault(status=500, count=1)
    make_client().post_ml_result(photo, _result([0.5, 0.5]))
    assert [r["status"] for r in gallery_server.received()] == [500, 200]
    assert gallery_server.ml_results(photo)[0]["embedding"] == [0.5, 0.5]


def test_429_and_503_are_waited_out(make_client: ClientFactory, gallery_server: GalleryServer) -> None:
    gallery_server.set_fault(status=429, count=1)
    make_client().post_text_embedding(3, [1.0, 2.0], "m")
    gallery_server.set_fault(status=503, count=2)
    make_client().post_text_embedding(3, [3.0, 4.0], "m")
    stored = gallery_server.text_query(3)
    assert stored is not None and stored["embedding"] == [3.0, 4.0]


def test_gallery_not_listening_is_unavailable(make_client: ClientFactory) -> None:
    from shared.embedded_redis import free_port

    client = make_client(API_BASE_URL=f"http://127.0.0.1:{free_port()}", MINDSIGHT_GALLERY_RETRIES=1)
    with pytest.raises(GalleryUnavailable, match="ConnectError"):
        client.post_faces(1, [])


def test_user_api_roundtrip(
    make_client: ClientFactory, gallery_server: GalleryServer, tmp_path: Path
) -> None:
    user = make_client(internal=False)
    uploaded = [user.upload_photo(write_jpeg(tmp_path / "in" / f"{i}.png", (i * 40, 0, 0))) for i in range(3)]
    assert all(p["path"].startswith("./uploads/original/") and p["path"].endswith(".png") for p in uploaded)
    ids = [p["id"] for p in uploaded]
    assert [p["id"] for p in user.list_photos(page_size=2)] == ids[::-1]  # follows pages
    assert [p["id"] for p in user.list_photos(limit=1)] == [ids[-1]]

    internal = make_client()
    for pid, vec in zip(ids, ([1.0, 0.0], [0.0, 1.0], [0.7, 0.7]), strict=True):
        internal.post_ml_result(pid, _result(vec))
    hits = user.search_vector([0.0, 1.0], "m", limit=2)
    assert [h["photo"]["id"] for h in hits] == [ids[1], ids[2]]
    assert user.get_photo(ids[0])["ml_results"][0]["dim"] == 2

    album = user.create_album("Trip", "auto", [ids[0], ids[2]])
    assert album["photo_ids"] == [ids[0], ids[2]]
    assert user.list_albums() == [album]
    with pytest.raises(GalleryRejected):
        user.create_album("Bad", "", [424242])

    internal.post_text_embedding(11, [0.1], "m")
    assert user.get_text_query(11)["embedding"] == [0.1]
    with pytest.raises(GalleryRejected, match="404"):
        user.get_text_query(12)
    assert user.healthz() == {"status": "ok"}


def test_user_api_without_token_is_auth_error(make_client: ClientFactory) -> None:
    with pytest.raises(GalleryAuthError):
        make_client(internal=False, ACCESS_TOKEN=None).list_photos()
