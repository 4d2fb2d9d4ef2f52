"""FastAPI dependencies shared by the route modules."""

from __future__ import annotations

from fastapi import Request

from services.gallery.store import GalleryStore


def get_store(request: Request) -> GalleryStore:
    """The app's store (one per app, built by create_app)."""
    store: GalleryStore = request.app.state.store
    return store
