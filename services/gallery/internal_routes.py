"""Internal callbacks the ML workers call (header x-internal-token): results in, nothing else out.

Each honours an optional Idempotency-Key (services.gallery.idempotency): a repeat is answered from the
stored answer and changes nothing."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from services.gallery.auth import require_internal
from services.gallery.deps import get_store
from services.gallery.idempotency import answer_once, idempotency_key
from services.gallery.schemas import FacesIn, MlResultIn, TextQueryIn
from services.gallery.store import GalleryStore, NewFace

router = APIRouter(prefix="/api/internal", dependencies=[Depends(require_internal)], tags=["internal"])


@router.post("/photos/{photo_id}/ml_result", response_model=None)
def post_ml_result(
    photo_id: int,
    body: MlResultIn,
    request: Request,
    store: GalleryStore = Depends(get_store),
    key: str | None = Depends(idempotency_key),
) -> dict[str, Any] | JSONResponse:
    """Upsert one (photo, model, modality) result; the same callback twice stores one row."""
    return answer_once(request, key, lambda: _store_ml_result(store, photo_id, body))


def _store_ml_result(store: GalleryStore, photo_id: int, body: MlResultIn) -> dict[str, Any]:
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


@router.post("/photos/{photo_id}/faces", response_model=None)
def post_faces(
    photo_id: int,
    body: FacesIn,
    request: Request,
    store: GalleryStore = Depends(get_store),
    key: str | None = Depends(idempotency_key),
) -> dict[str, Any] | JSONResponse:
    """Replace the photo's faces; an empty list records "processed, no face"."""
    return answer_once(request, key, lambda: _store_faces(store, photo_id, body))


def _store_faces(store: GalleryStore, photo_id: int, body: FacesIn) -> dict[str, Any]:
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


@router.post("/text_queries/{request_id}", response_model=None)
def post_text_query(
    request_id: int,
    body: TextQueryIn,
    request: Request,
    store: GalleryStore = Depends(get_store),
    key: str | None = Depends(idempotency_key),
) -> dict[str, Any] | JSONResponse:
    """Store the embedding of one text-search request."""

    def apply() -> dict[str, Any]:
        store.text_queries.upsert(request_id, body.model, body.embedding)
        return {"ok": True, "request_id": request_id, "dim": len(body.embedding)}

    return answer_once(request, key, apply)
