"""Search the gallery from the command line: embed a text (or a photo) locally, ask for the nearest photos.

Only the one CLIP model the query needs is loaded, on the configured device; the gallery's user API is
called with the operator's ACCESS_TOKEN.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from shared.device import resolve_device
from shared.errors import UnknownModel
from shared.gallery_client import GalleryClient
from shared.images import load_image
from shared.models.clip.registry import ClipModel, load_clip_models
from shared.settings import Settings

MAX_LIMIT = 1000
"""The gallery's own cap on results per vector search."""

MODALITIES = ("image", "caption")
"""What a query is compared with: the photos' image embeddings, or their captions' text embeddings."""


@dataclass(frozen=True)
class SearchHit:
    """One result, nearest first: its rank (from 1), the photo, and the cosine distance."""

    rank: int
    photo_id: int
    url: str
    distance: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_query_model(settings: Settings, label: str | None = None) -> ClipModel:
    """Load only the CLIP model `label` (default: the default one) of CLIP_MODELS."""
    wanted = settings.clip.label_for(label)
    specs = settings.clip.specs()
    spec = next((s for s in specs if s.label == wanted), None)
    if spec is None:
        raise UnknownModel(
            f"model {wanted!r} is not configured; CLIP_MODELS offers {', '.join(s.label for s in specs)}"
        )
    only = settings.clip.model_copy(update={"models_raw": f"{spec.label}={spec.source}"})
    device = resolve_device(settings.worker.device)
    return load_clip_models(only, settings.store, device, threads=settings.worker.threads)[spec.label]


def embed_query(model: ClipModel, text: str | None = None, image: Path | None = None) -> list[float]:
    """The query vector: the text tower on `text`, or the image tower on the photo at `image`."""
    if (image is None) == (text is None or not text.strip()):
        raise ValueError("give exactly one of a non-empty query text or an image path")
    if image is not None:
        vector = model.image.predict([load_image(image, min_side=model.image.image_size)])[0]
    else:
        assert text is not None
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:  # argv bytes the locale could not decode become lone surrogates
            raise ValueError(
                f"the query is not valid Unicode text at character {exc.start} (is the terminal's locale "
                "UTF-8? try LANG=C.UTF-8)"
            ) from None
        vector = model.text.predict([text])[0]
    return vector.tolist()


def search(
    settings: Settings,
    text: str | None = None,
    *,
    image: Path | None = None,
    label: str | None = None,
    limit: int = 10,
    modality: str = "image",
) -> tuple[str, list[SearchHit]]:
    """Embed the query with one model and return (its label, the gallery's nearest photos).

    `modality` picks what the query is compared with: the photos' image embeddings or their captions'.
    """
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be between 1 and {MAX_LIMIT}, got {limit}")
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {', '.join(MODALITIES)}, got {modality!r}")
    settings.gallery.require_access_token()  # before spending seconds on loading a model
    model = load_query_model(settings, label)
    embedding = embed_query(model, text, image)
    client = GalleryClient(settings.gallery, internal=False)
    try:
        items = client.search_vector(embedding, model=model.label, modality=modality, limit=limit)
    finally:
        client.close()
    return model.label, [_hit(rank, item, client.base_url) for rank, item in enumerate(items, start=1)]


def _hit(rank: int, item: dict[str, Any], base_url: str) -> SearchHit:
    photo = item.get("photo") or {}
    url = str(photo.get("url") or "")
    if url.startswith("/"):  # the gallery answers with site-relative URLs; print ones that open
        url = base_url + url
    return SearchHit(rank=rank, photo_id=int(photo["id"]), url=url, distance=float(item["distance"]))
