"""`mindsight dlq ls|show|stats|requeue|purge`: operators' view of what failed and why."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from mindsight.cli.common import cli_redis, config_errors_exit, settings_from
from shared.dead_letter import DeadLetterQueue, StoredLetter
from shared.settings import Settings
from workers.dispatch import Dispatcher
from workers.requeue import plan, requeue

console = Console(width=160) if not Console().is_terminal else Console()
QUEUE_CHOICE = click.Choice(["photo", "text", "all"])


def _queues(settings: Settings, which: str) -> list[tuple[str, DeadLetterQueue, str]]:
    """(kind, dead-letter queue, source list for legacy entries) for the selected queues."""
    conn = cli_redis(settings)
    out = []
    if which in ("photo", "all"):
        out.append(("photo", DeadLetterQueue(conn, settings.redis.photo_dlq), settings.redis.photo_queue))
    if which in ("text", "all"):
        out.append(("text", DeadLetterQueue(conn, settings.redis.text_dlq), settings.redis.text_queue))
    return out


def _filters(f: click.decorators.FC) -> click.decorators.FC:
    f = click.option("--queue", "which", type=QUEUE_CHOICE, default="all", show_default=True)(f)
    f = click.option("--capability", "-c", help="clip, caption, face or text.")(f)
    f = click.option("--error-type", "-e", help="e.g. ImageDecodeError, UnsafePath, BadPayload.")(f)
    return f


def _select(
    settings: Settings,
    which: str,
    capability: str | None,
    error_type: str | None,
    ids: set[str] | None = None,
) -> list[tuple[str, DeadLetterQueue, str, StoredLetter]]:
    rows = []
    for kind, dlq, source in _queues(settings, which):
        for item in dlq.select(capability=capability, error_type=error_type, ids=ids):
            rows.append((kind, dlq, source, item))
    return rows


def _chosen(
    settings: Settings,
    entry_ids: tuple[str, ...],
    which: str,
    capability: str | None,
    error_type: str | None,
    select_all: bool,
) -> list[tuple[str, DeadLetterQueue, str, StoredLetter]]:
    """Rows a changing command acts on; it must name ids or a filter, never the whole DLQ by accident."""
    if not entry_ids and not (select_all or capability or error_type):
        raise click.UsageError("name entry ids, or select with --capability / --error-type / --all")
    return _select(settings, which, capability, error_type, ids=set(entry_ids) or None)


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


@click.group()
def dlq() -> None:
    """Inspect, requeue and purge dead letters (REDIS_DLQ_NAME, TEXT_EMBED_DLQ_NAME)."""


@dlq.command(name="ls")
@_filters
@click.option("--limit", "-n", default=50, show_default=True, help="Rows to show (0 = all).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.pass_context
@config_errors_exit
def ls(
    ctx: click.Context, which: str, capability: str | None, error_type: str | None, limit: int, as_json: bool
) -> None:
    """List dead letters, newest first."""
    rows = _select(settings_from(ctx), which, capability, error_type)
    shown = rows[:limit] if limit else rows
    if as_json:
        for kind, _, _, item in shown:
            click.echo(json.dumps({"queue": kind, **asdict(item.letter)}))
        return
    table = Table(title=f"dead letters ({len(rows)} matching)")
    for col in ("id", "queue", "failed at", "capability", "item", "error type", "tries"):
        table.add_column(col, no_wrap=True)
    table.add_column("error", overflow="fold", min_width=20)
    for kind, _, _, item in shown:
        letter = item.letter
        payload = letter.payload or {}
        ref = payload.get("photo_id", payload.get("request_id", "-"))
        table.add_row(
            letter.id,
            kind,
            _when(letter.failed_at),
            letter.capability or "-",
            str(ref),
            letter.error_type,
            str(letter.attempts),
            letter.error[:120],
        )
    console.print(table)
    if limit and len(rows) > limit:
        console.print(f"... {len(rows) - limit} more (use --limit 0)")


@dlq.command()
@click.argument("entry_id")
@click.pass_context
@config_errors_exit
def show(ctx: click.Context, entry_id: str) -> None:
    """Print one entry in full (payload, error, attempts, worker)."""
    rows = _select(settings_from(ctx), "all", None, None, ids={entry_id})
    if not rows:
        raise click.ClickException(f"no dead letter with id {entry_id}")
    kind, _, _, item = rows[0]
    click.echo(json.dumps({"queue": kind, **asdict(item.letter)}, indent=2, ensure_ascii=False))


@dlq.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@config_errors_exit
def stats(ctx: click.Context, as_json: bool) -> None:
    """Counts per queue, capability and error type."""
    out: dict[str, dict[str, Any]] = {}
    for kind, q, _ in _queues(settings_from(ctx), "all"):
        s = q.stats()
        out[kind] = {
            "key": q.key,
            "total": sum(s["capability"].values()),
            "by_capability": dict(s["capability"]),
            "by_error_type": dict(s["error_type"]),
        }
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    table = Table(title="dead letters")
    for col in ("queue", "key", "total", "by capability", "by error type"):
        table.add_column(col)
    for kind, row in out.items():
        table.add_row(
            kind, row["key"], str(row["total"]), _counts(row["by_capability"]), _counts(row["by_error_type"])
        )
    console.print(table)


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(counts.items())) or "-"


@dlq.command(name="requeue")
@click.argument("entry_ids", nargs=-1)
@_filters
@click.option("--all", "select_all", is_flag=True, help="Every entry matching the filters.")
@click.option("--dry-run", is_flag=True, help="Say what would be requeued; change nothing.")
@click.pass_context
@config_errors_exit
def requeue_cmd(
    ctx: click.Context,
    entry_ids: tuple[str, ...],
    which: str,
    capability: str | None,
    error_type: str | None,
    select_all: bool,
    dry_run: bool,
) -> None:
    """Re-run only the failed capability of the selected entries (safe to interrupt)."""
    settings = settings_from(ctx)
    rows = _chosen(settings, entry_ids, which, capability, error_type, select_all)
    if not rows:
        click.echo("nothing matches")
        return
    if dry_run:
        for kind, _, _, item in rows:
            why = plan(item)
            verb = f"skip: {why}" if why else f"requeue -> {item.letter.capability or 'whole job'}"
            click.echo(f"{item.letter.id} ({kind}, {item.letter.error_type}): {verb}")
        click.echo(f"dry run: {len(rows)} entr{'y' if len(rows) == 1 else 'ies'} matched, nothing changed")
        return
    total_ok = 0
    by_queue: dict[str, tuple[DeadLetterQueue, str, list[StoredLetter]]] = {}
    for _, q, source, item in rows:
        by_queue.setdefault(q.key, (q, source, []))[2].append(item)
    for q, source, items in by_queue.values():
        dispatcher = Dispatcher(q.connection, settings.worker, settings.redis)
        report = requeue(q.connection, dispatcher, q, items, legacy_target=source)
        total_ok += len(report.requeued)
        for entry_id, why in report.skipped:
            click.echo(f"skipped {entry_id}: {why}", err=True)
    click.echo(f"requeued {total_ok} of {len(rows)}")


@dlq.command()
@click.argument("entry_ids", nargs=-1)
@_filters
@click.option("--all", "select_all", is_flag=True, help="Every entry matching the filters.")
@click.option("--dry-run", is_flag=True)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
@config_errors_exit
def purge(
    ctx: click.Context,
    entry_ids: tuple[str, ...],
    which: str,
    capability: str | None,
    error_type: str | None,
    select_all: bool,
    dry_run: bool,
    yes: bool,
) -> None:
    """Delete the selected entries for good."""
    rows = _chosen(settings_from(ctx), entry_ids, which, capability, error_type, select_all)
    if dry_run or not rows:
        click.echo(
            f"{'dry run: ' if dry_run else ''}{len(rows)} entr{'y' if len(rows) == 1 else 'ies'} "
            "would be deleted"
            if rows
            else "nothing matches"
        )
        return
    if not yes:
        click.confirm(f"delete {len(rows)} dead letter(s)?", abort=True)
    for _, q, _, item in rows:
        q.remove(item)
    click.echo(f"purged {len(rows)}")
