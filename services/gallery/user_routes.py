"""The user API (Authorization: Bearer): photos, uploads, albums, vector search, read-back."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, UploadFile
from fastapi.responses import FileResponse

from services.gallery.auth import current_user
from services.gallery.deps import get_store
from services.gallery.errors import PhotoNotFound
from services.gallery.schemas import AlbumIn, AlbumPhotosIn, VectorSearchIn
from services.gallery.store import GalleryStore
from services.gallery.uploads import MAX_UPLOAD_BYTES

router = APIRouter(tags=["user"])


@router.get("/api/photos")
def list_photos(
    limit: int = Query(50, ge=1, le=1000),
    offset: int = Query(0, ge=0),
    user_id: int = Depends(current_user),
    store: GalleryStore = Depends(get_store),
) -> dict[str, Any]:
    """A page of the caller's photos, newest first, with the total count."""
    items, total = store.list_photos(user_id, limit, offset)
    return {"items": items, "total": total, "limit": limit, "offset": offset}


@router.post("/api/photos", status_code=201)
def upload_photo(
    file: UploadFile, user_id: int = Depends(current_user), store: GalleryStore = Depends(get_store)
) -> dict[str, Any]:
    """Store an uploaded original under uploads/original and create its row (dev convenience)."""
    data = file.file.read(MAX_UPLOAD_BYTES + 1)
    name = store.uploads.save_bytes(file.filename or "upload", data)
    return store.add_photo(user_id, name)


@router.get("/api/photos/{photo_id}")
def get_photo(
    photo_id: int, user_id: int = Depends(current_user), store: GalleryStore = Depends(get_store)
) -> dict[str, Any]:
    """One photo with its ML results (model, modality, dim, status, caption, error) and faces."""
    return store.photo_detail(photo_id, user_id)


@router.get("/uploads/original/{name}")
def get_original(
    name: str, user_id: int = Depends(current_user), store: GalleryStore = Depends(get_store)
) -> FileResponse:
    """The original file, to its owner only."""
    photo = store.photo_by_filename(name)
    path = store.uploads.file(name)
    if photo is None or path is None or photo["user_id"] != user_id:
        raise PhotoNotFound(f"no photo file {name!r}")
    return FileResponse(path)


@router.get("/api/albums")
def list_albums(
    user_id: int = Depends(current_user), store: GalleryStore = Depends(get_store)
) -> dict[str, Any]:
    """The caller's albums with their photo ids."""
    return {"items": store.albums.list(user_id)}


@router.post("/api/albums", status_code=201)
def create_album(
    body: AlbumIn, user_id: int = Depends(current_user), store: GalleryStore = Depends(get_store)
) -> dict[str, Any]:
    """Create an album of the caller's own photos (404 names ids that are unknown or not theirs)."""
    return store.albums.create(user_id, body.name, body.description, body.photo_ids)


@router.post("/api/albums/{album_id}/photos")
def add_album_photos(
    album_id: int,
    body: AlbumPhotosIn,
    user_id: int = Depends(current_user),
    store: GalleryStore = Depends(get_store),
) -> dict[str, Any]:
    """Append the caller's photos to the caller's album (optional endpoint; 404 names what is unknown)."""
    return store.albums.add_photos(user_id, album_id, body.photo_ids)


@router.post("/api/search/vector")
def search_vector(
    body: VectorSearchIn, user_id: int = Depends(current_user), store: GalleryStore = Depends(get_store)
) -> list[dict[str, Any]]:
    """The caller's photos nearest to the embedding (cosine distance), nearest first."""
    hits = store.search(user_id, body.model, body.modality, body.embedding, body.limit)
    return [{"photo": {"id": p["id"], "url": p["url"]}, "distance": d} for p, d in hits]


@router.get("/api/text_queries/{request_id}")
def get_text_query(
    request_id: int, _user_id: int = Depends(current_user), store: GalleryStore = Depends(get_store)
) -> dict[str, Any]:
    """The embedding a text worker stored for this request; 404 while none has arrived."""
    result = store.text_queries.get(request_id)
    if result is None:
        raise HTTPException(404, f"text query {request_id} has no result yet")
    return result
