"""Internal callbacks the ML workers call (header x-internal-token): results in, nothing else out."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from services.gallery.auth import require_internal
from services.gallery.deps import get_store
from services.gallery.schemas import FacesIn, MlResultIn, TextQueryIn
from services.gallery.store import GalleryStore, NewFace

router = APIRouter(prefix="/api/internal", dependencies=[Depends(require_internal)], tags=["internal"])


@router.post("/photos/{photo_id}/ml_result")
def post_ml_result(
    photo_id: int, body: MlResultIn, store: GalleryStore = Depends(get_store)
) -> dict[str, Any]:
    """Upsert one (photo, model, modality) result; the same callback twice stores one row."""
    status = store.upsert_ml_result(
        photo_id,
        model=body.model,
        modality=body.modality,
        status=body.processing_status,
        embedding=body.embedding,
        ml_result=body.ml_result,
        error=body.error,
        caption=body.caption,
    )
    return {"ok": True, "photo_id": photo_id, "processing_status": status}


@router.post("/photos/{photo_id}/faces")
def post_faces(photo_id: int, body: FacesIn, store: GalleryStore = Depends(get_store)) -> dict[str, Any]:
    """Replace the photo's faces; an empty list records "processed, no face"."""
    faces = [
        NewFace(
            model=f.model,
            embedding=f.embedding,
            bbox=f.bbox.model_dump(),
            score=f.score,
            landmarks=f.landmarks,
        )
        for f in body.faces
    ]
    count = store.replace_faces(photo_id, faces)
    return {"ok": True, "photo_id": photo_id, "faces": count}


@router.post("/text_queries/{request_id}")
def post_text_query(
    request_id: int, body: TextQueryIn, store: GalleryStore = Depends(get_store)
) -> dict[str, Any]:
    """Store the embedding of one text-search request."""
    store.text_queries.upsert(request_id, body.model, body.embedding)
    return {"ok": True, "request_id": request_id, "dim": len(body.embedding)}
