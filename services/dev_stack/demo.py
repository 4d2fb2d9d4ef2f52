"""The demo `dev run` plays: queue the sample photos and a text query, wait for every result, read them back.

Photos and the text job go in through `mindsight enqueue` (the command a developer would type), results
come back through the gallery's user API, exactly as the gallery's own UI would see them.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from services.dev_stack.supervisor import Supervisor
from shared.errors import GalleryRejected, GalleryUnavailable, MindsightError
from shared.gallery_client import GalleryClient

PHOTO_LINE = re.compile(r"^\[\d+/\d+\] (?P<path>.+) -> photo (?P<id>\d+) queued")
TEXT_LINE = re.compile(r"^text job (?P<id>\d+) queued")
"""What `mindsight enqueue` prints per queued photo / text job (tests/test_dev_run.py pins both)."""


class DemoFailed(MindsightError):
    """The pipeline posted a failure, or a result never arrived in time."""


@dataclass
class Expectations:
    """Which results every photo must get before the demo counts as done."""

    clip_labels: list[str]
    captions: bool
    faces: bool


@dataclass
class PhotoResult:
    """One sample photo as the gallery shows it."""

    photo_id: int
    file: str
    clip: dict[str, int] = field(default_factory=dict)
    """label -> dimension of each stored image embedding."""
    caption: str | None = None
    caption_model: str | None = None
    caption_dim: int = 0
    faces: list[dict[str, Any]] | None = None
    """None until the face worker has posted (an empty list means "no face")."""
    failures: list[str] = field(default_factory=list)

    def missing(self, want: Expectations) -> list[str]:
        """Capabilities still without a result."""
        out = [f"clip:{label}" for label in want.clip_labels if label not in self.clip]
        if want.captions and self.caption is None:
            out.append("caption")
        if want.faces and self.faces is None:
            out.append("faces")
        return out

    def update(self, detail: dict[str, Any]) -> None:
        """Refresh from GET /api/photos/{id}."""
        self.failures = []
        for result in detail.get("ml_results", []):
            if result["status"] == "failed":
                self.failures.append(f"{result['model']}/{result['modality']}: {result.get('error')}")
            elif result["modality"] == "image":
                self.clip[result["model"]] = int(result["dim"])
            elif result["modality"] == "caption":
                self.caption, self.caption_model = result.get("caption") or "", result["model"]
                self.caption_dim = int(result["dim"])
        if detail.get("faces_processed_at"):
            self.faces = list(detail.get("faces") or [])


@dataclass
class TextResult:
    """The text query's embedding as the text worker stored it, and the embed-api's for the same text."""

    request_id: int
    query: str
    model: str = ""
    embedding: list[float] = field(default_factory=list)
    api_model: str = ""
    api_embedding: list[float] = field(default_factory=list)

    def api_cosine(self) -> float | None:
        """Cosine between the queue's and the API's vector (both come from the same text tower)."""
        if not self.embedding or len(self.embedding) != len(self.api_embedding):
            return None
        dot = sum(a * b for a, b in zip(self.embedding, self.api_embedding, strict=True))
        norms = math.sqrt(sum(a * a for a in self.embedding)) * math.sqrt(
            sum(b * b for b in self.api_embedding)
        )
        return dot / norms if norms else None


def enqueue_samples(
    sup: Supervisor, samples: Sequence[Path], query: str, tasks: str, timeout: float
) -> tuple[list[PhotoResult], TextResult]:
    """Run `mindsight enqueue SAMPLES --tasks T --text QUERY`; the photo ids and request id it printed."""
    args = ["enqueue", *(str(p) for p in samples), "--tasks", tasks, "--text", query]
    child = sup.run("enqueue", args, timeout)
    photos = [
        PhotoResult(int(m["id"]), Path(m["path"]).name)
        for m in (PHOTO_LINE.match(line) for line in child.output)
        if m
    ]
    texts = [int(m["id"]) for m in (TEXT_LINE.match(line) for line in child.output) if m]
    if len(photos) != len(samples) or len(texts) != 1:
        raise DemoFailed(
            f"could not read {len(samples)} photo ids and 1 text request id from `mindsight enqueue`'s "
            f"output (found {len(photos)} and {len(texts)}): has its output format changed?"
        )
    return photos, TextResult(texts[0], query)


def wait_for_results(
    sup: Supervisor,
    gallery: GalleryClient,
    photos: list[PhotoResult],
    text: TextResult,
    want: Expectations,
    deadline: float,
    progress: Callable[[str], None],
) -> None:
    """Poll the gallery until every photo and the text query have their results (or fail, or time out)."""
    start, last_line, last_print = time.monotonic(), "", 0.0
    while True:
        try:
            for photo in photos:
                if photo.missing(want) or photo.failures:
                    photo.update(gallery.get_photo(photo.photo_id))
            if not text.embedding:
                _read_text(gallery, text)
        except GalleryUnavailable as exc:  # a slow answer under load; a dead gallery fails sup.check()
            progress(f"gallery did not answer: {exc}")
        failed = [f"photo {p.photo_id} ({p.file}): {f}" for p in photos for f in p.failures]
        if failed:
            raise DemoFailed("the pipeline posted failures:\n  " + "\n  ".join(failed))
        line = _progress_line(photos, text, want)
        now = time.monotonic()
        if line != last_line or now - last_print > 10:
            progress(f"{line} ({now - start:.0f}s)")
            last_line, last_print = line, now
        if not any(p.missing(want) for p in photos) and text.embedding:
            return
        if now > deadline:
            missing = {f"photo {p.photo_id} ({p.file})": p.missing(want) for p in photos if p.missing(want)}
            raise DemoFailed(
                f"timed out waiting for results: {missing or 'text query ' + str(text.request_id)}"
            )
        sup.sleep(0.5)


def _read_text(gallery: GalleryClient, text: TextResult) -> None:
    try:
        stored = gallery.get_text_query(text.request_id)
    except GalleryRejected:  # 404 until the text worker has posted
        return
    text.model, text.embedding = str(stored.get("model", "")), list(stored.get("embedding") or [])


def _progress_line(photos: list[PhotoResult], text: TextResult, want: Expectations) -> str:
    n = len(photos)
    parts = [f"clip {sum(all(lb in p.clip for lb in want.clip_labels) for p in photos)}/{n}"]
    if want.captions:
        parts.append(f"captions {sum(p.caption is not None for p in photos)}/{n}")
    if want.faces:
        parts.append(f"faces {sum(p.faces is not None for p in photos)}/{n}")
    parts.append(f"text query {1 if text.embedding else 0}/1")
    return "results: " + ", ".join(parts)


def wait_embed_api(sup: Supervisor, base_url: str, headers: dict[str, str], deadline: float) -> None:
    """Wait for the embed-api's /readyz (models loaded) to answer 200."""
    with httpx.Client(base_url=base_url, headers=headers, timeout=5) as client:
        while True:
            try:
                if client.get("/readyz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise DemoFailed(f"embed-api at {base_url} was not ready in time")
            sup.sleep(0.3)


def embed_with_api(base_url: str, headers: dict[str, str], text: TextResult) -> None:
    """POST /embed_text with the demo query; keeps the answer on `text`."""
    try:
        resp = httpx.post(f"{base_url}/embed_text", json={"text": text.query}, headers=headers, timeout=30)
    except httpx.TransportError as exc:
        raise DemoFailed(f"embed-api at {base_url}: {exc}") from exc
    if resp.status_code != 200:
        raise DemoFailed(f"embed-api POST /embed_text -> {resp.status_code}: {resp.text[:300]}")
    body = resp.json()
    text.api_model, text.api_embedding = str(body["model"]), list(body["embedding"])


def wait_gallery(sup: Supervisor, gallery: GalleryClient, deadline: float) -> None:
    """Wait until the gallery answers /healthz."""
    while True:
        try:
            gallery.healthz()
            return
        except GalleryUnavailable:
            if time.monotonic() > deadline:
                raise DemoFailed(f"the gallery at {gallery.base_url} did not come up in time") from None
        sup.sleep(0.2)
