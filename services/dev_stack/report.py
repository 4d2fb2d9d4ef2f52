"""What `dev run` prints: the stand-in banner, one small table per sample photo, and the URLs to try."""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field

from services.dev_stack.demo import PhotoResult, TextResult

BANNER_RULE = "!" * 100


def standin_banner(reasons: Sequence[str]) -> list[str]:
    """The loud warning shown whenever a random stand-in model is in use."""
    return [
        BANNER_RULE,
        "!!  using tiny RANDOM stand-in models: embeddings are meaningless",
        *(f"!!    - {r}" for r in reasons),
        "!!  set CLIP_MODELS=... (and CAPTION_MODEL_NAME=...) and run `mindsight models download` "
        "for real ones",
        BANNER_RULE,
    ]


def photo_table(photo: PhotoResult) -> list[str]:
    """A few aligned lines: what the gallery stored for one photo."""
    clip = ", ".join(f"{label} {dim}-d" for label, dim in sorted(photo.clip.items())) or "-"
    lines = [f"photo {photo.photo_id}  {photo.file}", f"  clip      {clip}"]
    if photo.caption is not None:
        text = photo.caption if len(photo.caption) <= 100 else photo.caption[:97] + "..."
        lines.append(f'  caption   "{text}"  (embedded by {photo.caption_model}, {photo.caption_dim}-d)')
    if photo.faces is not None:
        boxes = "; ".join(_box(f) for f in photo.faces)
        lines.append(f"  faces     {len(photo.faces)}{'  ' + boxes if boxes else ''}")
    return lines


def _box(face: dict[str, object]) -> str:
    b = face["bbox"]
    assert isinstance(b, dict)
    score = face.get("score")
    where = f"({b['x1']:.0f},{b['y1']:.0f})-({b['x2']:.0f},{b['y2']:.0f})"
    return f"{where} score {score:.2f}" if isinstance(score, float) else where


def text_lines(text: TextResult) -> list[str]:
    """The text query's stored embedding, and the embed-api's answer for the same text."""
    head = ", ".join(f"{v:+.3f}" for v in text.embedding[:4])
    lines = [
        f'text query "{text.query}" (request {text.request_id})  ->  {text.model} '
        f"{len(text.embedding)}-d [{head}, ...]"
    ]
    if text.api_embedding:
        cos = text.api_cosine()
        same = f"cosine {cos:.4f} with the text worker's" if cos is not None else "a different model"
        lines.append(f'embed-api  POST /embed_text "{text.query}"  ->  {text.api_model} ({same})')
    return lines


@dataclass
class Endpoints:
    """Where things listen, for the "try it" section."""

    gallery_url: str
    embed_url: str | None
    access_token: str
    env_file: str
    logs: str
    embed_token: bool = False
    program: str = "mindsight"
    """How this shell reaches the `mindsight` command (a venv path when the venv is not activated)."""
    metrics: dict[str, str] = field(default_factory=dict)
    """Service name -> its /metrics URL."""


def try_it(ep: Endpoints, query: str) -> list[str]:
    """Copy-pasteable commands for a second terminal."""
    cli = f"{ep.program} --env-file {shlex.quote(ep.env_file)}"
    lines = [
        "Try it, in another terminal:",
        f"  gallery     {ep.gallery_url}   (API docs {ep.gallery_url}/docs)",
        f"  token       export ACCESS_TOKEN={ep.access_token}",
        f'  photos      curl -s -H "Authorization: Bearer $ACCESS_TOKEN" {ep.gallery_url}/api/photos',
    ]
    if ep.embed_url:
        body = shlex.quote(json.dumps({"text": query}))
        auth = ' -H "Authorization: Bearer $EMBED_API_TOKEN"' if ep.embed_token else ""
        lines.append(
            f"  embed-api   curl -s -X POST {ep.embed_url}/embed_text{auth} "
            f"-H 'content-type: application/json' -d {body}"
        )
    lines += [f"  metrics     {url}   ({name})" for name, url in ep.metrics.items()]
    lines += [
        f"  search      {cli} search {shlex.quote(query)}",
        f"  your photos {cli} enqueue path/to/photos",
        f"  logs        {ep.logs}",
    ]
    return lines
