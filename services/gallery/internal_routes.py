"""Internal callbacks the ML workers call (header x-internal-token): results in, nothing else out.

Each honours an optional Idempotency-Key (services.gallery.idempotency): a repeat is answered from the
stored answer and changes nothing."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from services.gallery.auth import require_internal
from services.gallery.deps import get_store
from services.gallery.idempotency import answer_once, idempotency_key
from services.gallery.schemas import FacesIn, MlResultIn, TextQueryIn
from services.gallery.store import GalleryStore, NewFace

router = APIRouter(prefix="/api/internal", dependencies=[Depends(require_internal)], tags=["internal"])

Answer = dict[str, Any] | JSONResponse


@dataclass(frozen=True)
class Callback:
    """What every internal callback needs besides its path id and body: the store and its repeat key."""

    request: Request
    store: GalleryStore
    key: str | None

    def once(self, apply: Callable[[GalleryStore], dict[str, Any]]) -> Answer:
        """Run `apply` on the store, unless this Idempotency-Key was answered before."""
        return answer_once(self.request, self.key, lambda: apply(self.store))


def callback(
    request: Request,
    store: GalleryStore = Depends(get_store),
    key: str | None = Depends(idempotency_key),
) -> Callback:
    """FastAPI dependency: the Callback of this request."""
    return Callback(request, store, key)


@router.post("/photos/{photo_id}/ml_result", response_model=None)
def post_ml_result(photo_id: int, body: MlResultIn, call: Callback = Depends(callback)) -> Answer:
    """Upsert one (photo, model, modality) result; the same callback twice stores one row."""
    return call.once(lambda store: _store_ml_result(store, photo_id, body))


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
def post_faces(photo_id: int, body: FacesIn, call: Callback = Depends(callback)) -> Answer:
    """Replace the photo's faces; an empty list records "processed, no face"."""
    return call.once(lambda store: _store_faces(store, photo_id, body))


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
def post_text_query(request_id: int, body: TextQueryIn, call: Callback = Depends(callback)) -> Answer:
    """Store the embedding of one text-search request."""

    def apply(store: GalleryStore) -> dict[str, Any]:
        store.text_queries.upsert(request_id, body.model, body.embedding)
        return {"ok": True, "request_id": request_id, "dim": len(body.embedding)}

    return call.once(apply)
