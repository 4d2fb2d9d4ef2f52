"""The one HTTP client for the gallery API: base URL, auth headers, timeouts, retries, status mapping.

Internal callbacks carry `x-internal-token` and, inside a job, an `Idempotency-Key` (shared.idempotency);
the user API (photos, albums, vector search) used by the CLI tools carries
`Authorization: Bearer $ACCESS_TOKEN`. Nothing else in the project builds gallery URLs.
"""

from __future__ import annotations

import logging
import mimetypes
import time
from pathlib import Path
from typing import Any

import httpx

from shared.errors import GalleryAuthError, GalleryRejected, GalleryUnavailable
from shared.gallery_contract import FaceIn, FacesIn, MlResultIn, TextQueryIn
from shared.idempotency import HEADER as IDEMPOTENCY_HEADER
from shared.idempotency import current_key
from shared.settings import GallerySettings

log = logging.getLogger(__name__)

FACES_KEY_MODEL = "faces"
"""The model part of a faces callback's idempotency key: the body replaces the photo's whole face set."""

RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
"""Answers that mean "not now": waited out, never dead-lettered."""


class GalleryClient:
    """Talks to one gallery; raises GalleryUnavailable / GalleryAuthError / GalleryRejected."""

    def __init__(
        self,
        settings: GallerySettings,
        *,
        internal: bool = True,
        transport: httpx.BaseTransport | None = None,
        retry_base_s: float = 0.5,
    ) -> None:
        headers = {"user-agent": "mindsight-ml"}
        if internal:
            headers["x-internal-token"] = settings.require_internal_token()
        elif settings.access_token.get_secret_value():
            headers["authorization"] = f"Bearer {settings.access_token.get_secret_value()}"
        self.base_url = settings.api_base_url.rstrip("/")
        self._retries = max(0, settings.retries)
        self._retry_base_s = retry_base_s
        self._http = httpx.Client(
            base_url=self.base_url, headers=headers, timeout=settings.timeout_s, transport=transport
        )

    # -- internal callbacks -------------------------------------------------------------------------
    def post_ml_result(self, photo_id: int, body: MlResultIn) -> None:
        """POST /api/internal/photos/{id}/ml_result (image or caption embedding, or a failure)."""
        key = current_key(photo_id, body.model, body.processing_status)
        self._request(
            "POST", f"/api/internal/photos/{photo_id}/ml_result", json=body.wire(), headers=_key_header(key)
        )

    def post_faces(self, photo_id: int, faces: list[FaceIn]) -> None:
        """POST /api/internal/photos/{id}/faces; an empty list says "processed, no face"."""
        body = FacesIn(faces=faces)
        key = current_key(photo_id, FACES_KEY_MODEL, "done")
        self._request(
            "POST", f"/api/internal/photos/{photo_id}/faces", json=body.wire(), headers=_key_header(key)
        )

    def post_text_embedding(self, request_id: int, embedding: list[float], model: str) -> None:
        """POST /api/internal/text_queries/{request_id}."""
        body = TextQueryIn(embedding=embedding, model=model)
        key = current_key(request_id, model, "done")
        self._request(
            "POST", f"/api/internal/text_queries/{request_id}", json=body.wire(), headers=_key_header(key)
        )

    # -- user API (CLI tools) -----------------------------------------------------------------------
    def list_photos(self, limit: int = 0, page_size: int = 200) -> list[dict[str, Any]]:
        """GET /api/photos, following pages; newest first; `limit` 0 means all."""
        photos: list[dict[str, Any]] = []
        offset = 0
        while True:
            page = self._request("GET", "/api/photos", params={"limit": page_size, "offset": offset}).json()
            items = page["items"] if isinstance(page, dict) else page
            photos.extend(items)
            if len(items) < page_size or (limit and len(photos) >= limit):
                break
            offset += len(items)
        return photos[:limit] if limit else photos

    def list_albums(self) -> list[dict[str, Any]]:
        """GET /api/albums."""
        data = self._request("GET", "/api/albums").json()
        return data["items"] if isinstance(data, dict) else data

    def create_album(self, name: str, description: str, photo_ids: list[int]) -> dict[str, Any]:
        """POST /api/albums."""
        body = {"name": name, "description": description, "photo_ids": photo_ids}
        return self._request("POST", "/api/albums", json=body).json()

    def add_album_photos(self, album_id: int, photo_ids: list[int]) -> dict[str, Any]:
        """POST /api/albums/{id}/photos: optional in the contract; GalleryRejected where it is absent."""
        return self._request("POST", f"/api/albums/{album_id}/photos", json={"photo_ids": photo_ids}).json()

    def search_vector(
        self, embedding: list[float], model: str, modality: str = "image", limit: int = 20
    ) -> list[dict[str, Any]]:
        """POST /api/search/vector -> [{"photo": {"id", "url"}, "distance"}], nearest first."""
        body = {"embedding": embedding, "model": model, "modality": modality, "limit": limit}
        data = self._request("POST", "/api/search/vector", json=body).json()
        return data["items"] if isinstance(data, dict) else data

    def upload_photo(self, path: Path) -> dict[str, Any]:
        """POST /api/photos (multipart) -> {"id", "path", "url", ...}; the dev gallery's upload."""
        path = Path(path)
        data = path.read_bytes()  # bytes, not a file handle, so a retry re-sends the whole file
        mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return self._request("POST", "/api/photos", files={"file": (path.name, data, mime)}).json()

    def get_photo(self, photo_id: int) -> dict[str, Any]:
        """GET /api/photos/{id}: the photo with its ML results and faces."""
        return self._request("GET", f"/api/photos/{photo_id}").json()

    def get_text_query(self, request_id: int) -> dict[str, Any]:
        """GET /api/text_queries/{id}: the stored embedding; GalleryRejected (404) while none arrived."""
        return self._request("GET", f"/api/text_queries/{request_id}").json()

    def healthz(self) -> dict[str, Any]:
        """GET /healthz: raises GalleryUnavailable when the gallery cannot be reached."""
        return self._request("GET", "/healthz").json()

    def close(self) -> None:
        self._http.close()

    # -- plumbing -----------------------------------------------------------------------------------
    def _request(self, method: str, url: str, **kw: Any) -> httpx.Response:
        """Send with short in-process retries on "not now"; map the final answer to our errors."""
        last: str = ""
        for attempt in range(self._retries + 1):
            if attempt:
                time.sleep(self._retry_base_s * 2 ** (attempt - 1))
            try:
                resp = self._http.request(method, url, **kw)
            except httpx.TransportError as exc:  # connect, read timeout, protocol
                last = f"{method} {url}: {type(exc).__name__}: {exc}"
                continue
            if resp.status_code < 400:
                return resp
            if resp.status_code in (401, 403):
                raise GalleryAuthError(
                    f"{method} {url} -> {resp.status_code}: the gallery refused our token "
                    "(check PROCESSING_INTERNAL_TOKEN / ACCESS_TOKEN)"
                )
            if resp.status_code in RETRY_STATUSES:
                last = f"{method} {url} -> {resp.status_code}"
                continue
            raise GalleryRejected(f"{method} {url} -> {resp.status_code}: {resp.text[:300]}")
        raise GalleryUnavailable(f"gallery at {self.base_url} unavailable: {last}")


def _key_header(key: str | None) -> dict[str, str]:
    return {IDEMPOTENCY_HEADER: key} if key else {}
