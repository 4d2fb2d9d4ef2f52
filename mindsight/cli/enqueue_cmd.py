"""`mindsight enqueue`: upload photos to the gallery and push their jobs, or push a text-search job.

This plays the gallery backend's part for development: the backend normally creates the photo row and
LPUSHes the job itself.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import click
import redis

from mindsight.cli.common import cli_redis, config_errors_exit, settings_from
from services.gallery.uploads import IMAGE_SUFFIXES
from shared.errors import GalleryAuthError, GalleryRejected, GalleryUnavailable
from shared.gallery_client import GalleryClient
from shared.payloads import TASK_NAMES
from shared.queues import KEY_PREFIX
from shared.redaction import redact_url
from shared.settings import Settings

TEXT_REQUEST_COUNTER = f"{KEY_PREFIX}:dev:text_request_id"
"""INCR'd for text-job request ids; the real backend uses its text_queries row ids instead."""


def collect_images(paths: Iterable[Path]) -> list[Path]:
    """Image files named directly or found (recursively, sorted) under the given folders."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(
                p for p in sorted(path.rglob("*")) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
        elif path.suffix.lower() in IMAGE_SUFFIXES:
            found.append(path)
        else:
            raise click.BadParameter(f"{path} is not an image ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return list(dict.fromkeys(found))


def _redis(settings: Settings) -> redis.Redis:
    client = cli_redis(settings)
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        url = redact_url(settings.redis.url)
        raise click.ClickException(f"Redis unreachable at REDIS_URL={url}: {exc}") from exc
    return client


def _gallery(settings: Settings) -> GalleryClient:
    settings.gallery.require_access_token()
    client = GalleryClient(settings.gallery, internal=False, retry_base_s=0.2)
    url = redact_url(settings.gallery.api_base_url)
    try:
        # Part of the contract every gallery implements, and it proves the token before any upload.
        client.list_photos(limit=1, page_size=1)
    except GalleryAuthError as exc:
        client.close()
        raise click.ClickException(f"gallery at API_BASE_URL={url} refused ACCESS_TOKEN: {exc}") from exc
    except (GalleryUnavailable, GalleryRejected) as exc:
        client.close()
        raise click.ClickException(f"gallery unreachable at API_BASE_URL={url}: {exc}") from exc
    return client


@click.command()
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option("--tasks", default="clip,face", show_default=True, help="Comma-separated tasks for photo jobs.")
@click.option(
    "--user-id", default=1, show_default=True, help="Job user_id when the gallery's answer has none."
)
@click.option("--text", "text", default=None, help="Also push a text-search job for this query.")
@click.option("--model", default=None, help="CLIP label for the text job [default: the worker's default].")
@click.pass_context
@config_errors_exit
def enqueue(
    ctx: click.Context, paths: tuple[Path, ...], tasks: str, user_id: int, text: str | None, model: str | None
) -> None:
    """Upload DIR_OR_FILES to the gallery and queue their photo jobs; --text queues a text job."""
    if not paths and text is None:
        raise click.UsageError("give image files or folders, and/or --text QUERY")
    settings = settings_from(ctx)
    task_list = [t.strip().lower() for t in tasks.split(",") if t.strip()]
    if paths and not task_list:
        raise click.BadParameter("--tasks names no task")
    if paths and not any(t in TASK_NAMES for t in task_list):
        click.echo(
            f"warning: none of {task_list} is an ML task ({', '.join(TASK_NAMES)}); "
            "the workers will ignore these jobs",
            err=True,
        )
    images = collect_images(paths)
    if paths and not images:
        raise click.ClickException("no image files found in the given paths")
    if text is not None and not text.strip():
        raise click.BadParameter("--text is empty")

    queue = _redis(settings)
    failures = 0
    if images:
        failures = _enqueue_photos(settings, queue, images, task_list, user_id)
    if text is not None:
        request_id = int(queue.incr(TEXT_REQUEST_COUNTER))
        job = {"type": "text_embed", "request_id": request_id, "query": text, "model": model}
        queue.lpush(settings.redis.text_queue, json.dumps(job))
        click.echo(f"text job {request_id} queued on {settings.redis.text_queue}: {text!r}")
    if failures:
        raise SystemExit(1)


def _enqueue_photos(
    settings: Settings, queue: redis.Redis, images: list[Path], tasks: list[str], user_id: int
) -> int:
    """Upload and queue each image; return how many failed (aborts on auth or outage)."""
    gallery = _gallery(settings)
    gallery_url, redis_url = redact_url(settings.gallery.api_base_url), redact_url(settings.redis.url)
    queued = failed = 0
    try:
        for n, image in enumerate(images, 1):
            prefix = f"[{n}/{len(images)}] {image}"
            try:
                photo = gallery.upload_photo(image)
            except GalleryRejected as exc:
                failed += 1
                click.echo(f"{prefix}: upload rejected: {exc}", err=True)
                continue
            except (GalleryUnavailable, GalleryAuthError) as exc:
                raise click.ClickException(
                    f"{prefix}: gallery at API_BASE_URL={gallery_url} failed: {exc} "
                    f"({queued} queued before this)"
                ) from exc
            job = {
                "photo_id": photo["id"],
                "user_id": photo.get("user_id", user_id),
                "path": photo["path"],
                "tasks": tasks,
            }
            try:
                queue.lpush(settings.redis.photo_queue, json.dumps(job))
            except (redis.RedisError, OSError) as exc:
                raise click.ClickException(
                    f"{prefix}: uploaded as photo {photo['id']} but Redis at REDIS_URL={redis_url} "
                    f"failed: {exc} ({queued} queued before this)"
                ) from exc
            queued += 1
            click.echo(f"{prefix} -> photo {photo['id']} queued ({','.join(tasks)})")
    finally:
        gallery.close()
    click.echo(f"done: {queued} photo job(s) queued on {settings.redis.photo_queue}, {failed} failed")
    return failed
