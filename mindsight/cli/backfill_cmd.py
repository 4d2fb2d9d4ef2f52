"""`mindsight backfill`: enqueue the gallery's library (or part of it) on the bulk lane, resumably."""

from __future__ import annotations

import click
import redis

from mindsight.cli.common import config_errors_exit, settings_from
from services.backfill import Backfill, BackfillPlan, Progress, parse_rate
from shared.gallery_client import GalleryClient
from shared.payloads import TASK_NAMES


@click.command()
@click.option("--tasks", default="clip", show_default=True, help="Comma-separated: clip, caption, face.")
@click.option("--model", "models", multiple=True, help="Re-embed only this CLIP label (repeatable).")
@click.option("--since-id", type=int, default=0, show_default=True, help="Only photos with a larger id.")
@click.option("--limit", type=int, default=0, show_default=True, help="At most this many photos (0: all).")
@click.option("--dry-run", is_flag=True, help="List what would be enqueued; write nothing.")
@click.option(
    "--rate", default="", help="At most this many photos per second, e.g. 20/s (default: no limit)."
)
@click.option(
    "--max-outstanding",
    type=int,
    default=None,
    help="Photos waiting in the bulk lane at once [default: MINDSIGHT_BACKFILL_MAX_OUTSTANDING].",
)
@click.option("--fresh", is_flag=True, help="Ignore an unfinished checkpoint and start a new run.")
@click.option("--no-wait", is_flag=True, help="Return once everything is enqueued, not once it is done.")
@click.pass_context
@config_errors_exit
def backfill(
    ctx: click.Context,
    tasks: str,
    models: tuple[str, ...],
    since_id: int,
    limit: int,
    dry_run: bool,
    rate: str,
    max_outstanding: int | None,
    fresh: bool,
    no_wait: bool,
) -> None:
    """(Re-)process the library from the gallery on the bulk lane; Ctrl-C and run again to resume."""
    settings = settings_from(ctx)
    task_list = [t.strip() for t in tasks.split(",") if t.strip()]
    unknown = [t for t in task_list if t.lower() not in TASK_NAMES]
    if not task_list or unknown:
        raise click.UsageError(f"--tasks: unknown {unknown or 'empty'}; choose from clip, caption, face")
    try:
        pace = parse_rate(rate)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    bound = max_outstanding or settings.worker.backfill_max_outstanding
    plan = BackfillPlan(
        tasks=task_list,
        models=list(models),
        since_id=since_id,
        limit=limit,
        rate=pace,
        max_outstanding=bound,
        chunk=max(1, min(settings.worker.bulk_batch_size, bound)),
    )
    settings.gallery.require_access_token()
    client = GalleryClient(settings.gallery, internal=False)
    conn = redis.Redis.from_url(settings.redis.url, socket_connect_timeout=5)

    def report(progress: Progress) -> None:
        click.echo(progress.line(), err=True)

    job = Backfill(conn, settings.redis.photo_bulk_queue, plan, report)
    try:
        photos = client.list_photos()
    finally:
        client.close()
    todo, progress = job.todo(photos, fresh=fresh)
    how = f"resuming run {progress.run} after photo {progress.last_id}" if progress.resumed else "new run"
    click.echo(
        f"{len(photos)} photos listed; {len(todo)} to enqueue ({how}) on {settings.redis.photo_bulk_queue}"
    )
    if dry_run:
        for photo in todo[:20]:
            click.echo(f"  would enqueue photo {photo['id']}: {photo['path']}")
        if len(todo) > 20:
            click.echo(f"  ... and {len(todo) - 20} more")
        return
    job.run(todo, progress, wait=not no_wait)
    click.echo(
        f"backfill {progress.run}: {progress.pushed} photos enqueued" + ("" if no_wait else ", all done")
    )
