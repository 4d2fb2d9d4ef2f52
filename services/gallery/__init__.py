"""The reference gallery: the gallery backend's side of the wire contract, over SQLite, for dev and tests."""

from services.gallery.app import create_app

__all__ = ["create_app"]
