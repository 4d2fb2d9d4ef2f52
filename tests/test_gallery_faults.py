"""Dev fault injection: a gallery that is down then recovers, or slow, over real HTTP."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from services.gallery.app import create_app
from services.gallery.server import BackgroundServer
from tests.fixtures.gallery import GalleryServer, write_jpeg


@pytest.fixture
def internal(gallery_server: GalleryServer) -> Iterator[httpx.Client]:
    headers = {"x-internal-token": gallery_server.internal_token}
    with httpx.Client(base_url=gallery_server.url, headers=headers, timeout=10) as client:
        yield client


@pytest.fixture
def photo(gallery_server: GalleryServer, tmp_path: Path) -> int:
    return gallery_server.add_photo(write_jpeg(tmp_path / "in" / "a.jpg"))[0]


def _body(vec: list[float]) -> dict[str, object]:
    return {"model": "m", "modality": "image", "embedding": vec, "processing_status": "done"}


def test_down_for_n_callbacks_then_recovers(
    internal: httpx.Client, gallery_server: GalleryServer, photo: int
) -> None:
    resp = internal.post("/_dev/faults", json={"status": 500, "count": 2})
    assert resp.json()["fault"] == {"status": 500, "delay_s": 0.0, "remaining": 2, "only": None}
    url = f"/api/internal/photos/{photo}/ml_result"
    statuses = [internal.post(url, json=_body([float(i), 1.0])).status_code for i in range(3)]
    assert statuses == [500, 500, 200]
    # Only the call that got through was stored.
    assert gallery_server.ml_results(photo)[0]["embedding"] == [2.0, 1.0]
    assert [(r["path"], r["status"]) for r in gallery_server.received()] == [
        (url, 500),
        (url, 500),
        (url, 200),
    ]
    assert gallery_server.received()[0]["body"]["embedding"] == [0.0, 1.0]
    assert internal.get("/_dev/faults").json() == {"fault": None}


def test_fault_without_count_lasts_until_cleared(
    internal: httpx.Client, gallery_server: GalleryServer, photo: int
) -> None:
    gallery_server.set_fault(status=503)
    url = f"/api/internal/photos/{photo}/faces"
    assert {internal.post(url, json={"faces": []}).status_code for _ in range(4)} == {503}
    gallery_server.set_fault()
    assert internal.post(url, json={"faces": []}).status_code == 200


@pytest.mark.parametrize("status", [401, 429])
def test_injected_status_is_what_the_client_sees(internal: httpx.Client, photo: int, status: int) -> None:
    internal.post("/_dev/faults", json={"status": status, "count": 1})
    resp = internal.post(f"/api/internal/photos/{photo}/faces", json={"faces": []})
    assert resp.status_code == status and "injected" in resp.json()["error"]


def test_delay_then_normal_answer(internal: httpx.Client, gallery_server: GalleryServer, photo: int) -> None:
    gallery_server.set_fault(delay_s=0.4, count=1)
    start = time.perf_counter()
    assert internal.post(f"/api/internal/photos/{photo}/faces", json={"faces": []}).status_code == 200
    assert time.perf_counter() - start >= 0.4
    start = time.perf_counter()
    assert internal.post(f"/api/internal/photos/{photo}/faces", json={"faces": []}).status_code == 200
    assert time.perf_counter() - start < 0.4


def test_slow_gallery_times_out_the_client_but_still_stores(
    gallery_server: GalleryServer, photo: int
) -> None:
    gallery_server.set_fault(delay_s=0.6, count=1)
    headers = {"x-internal-token": gallery_server.internal_token}
    impatient = httpx.Client(base_url=gallery_server.url, headers=headers, timeout=0.2)
    with impatient, pytest.raises(httpx.ReadTimeout):
        impatient.post(f"/api/internal/photos/{photo}/ml_result", json=_body([1.0]))
    # Like a real slow backend, the request is processed after the caller gave up.
    deadline = time.monotonic() + 5
    while not gallery_server.ml_results(photo) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gallery_server.ml_results(photo)[0]["embedding"] == [1.0]


def test_fault_endpoint_needs_internal_token(gallery_server: GalleryServer) -> None:
    resp = httpx.post(f"{gallery_server.url}/_dev/faults", json={"status": 500, "count": 1})
    assert resp.status_code == 401
    assert (
        httpx.post(
            f"{gallery_server.url}/_dev/faults",
            json={"status": 200},
            headers={"x-internal-token": gallery_server.internal_token},
        ).status_code
        == 422
    )


def test_user_api_is_not_faulted(internal: httpx.Client, gallery_server: GalleryServer) -> None:
    gallery_server.set_fault(status=500)
    bearer = {"authorization": f"Bearer {gallery_server.access_token}"}
    assert httpx.get(f"{gallery_server.url}/api/photos", headers=bearer).status_code == 200
    assert gallery_server.received() == []


def test_production_app_has_no_dev_routes(tmp_path: Path) -> None:
    server = BackgroundServer(create_app(tmp_path, "tok", {"u": 1}, dev=False)).start()
    try:
        resp = httpx.post(
            f"{server.url}/_dev/faults", json={"status": 500}, headers={"x-internal-token": "tok"}
        )
        assert resp.status_code == 404
    finally:
        server.stop()
