"""`mindsight jobs ls|rm`: see and remove RQ jobs wherever they are stuck, without redis-cli."""

from __future__ import annotations

import json

import click
import redis
from rich.console import Console
from rich.table import Table

from mindsight.cli.common import cli_redis, config_errors_exit, settings_from
from shared.payloads import Capability
from workers.delivery.stuck_jobs import PLACES, find, remove

CAPABILITY = click.Choice([c.value for c in Capability])


def _connect(ctx: click.Context) -> redis.Redis:
    return cli_redis(settings_from(ctx))


def _caps(capability: str | None) -> list[Capability]:
    return [Capability(capability)] if capability else list(Capability)


@click.group()
def jobs() -> None:
    """RQ jobs in the capability queues and registries (queued, stranded, running, retrying, failed)."""


@jobs.command(name="ls")
@click.option("--capability", "-c", type=CAPABILITY, help="Only this capability.")
@click.option("--where", "places", multiple=True, type=click.Choice(PLACES), help="Only these places.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.pass_context
@config_errors_exit
def ls(ctx: click.Context, capability: str | None, places: tuple[str, ...], as_json: bool) -> None:
    """List jobs with their place, photo/request ids, attempt and age."""
    try:
        rows = find(_connect(ctx), _caps(capability), places or PLACES)
    except redis.RedisError as exc:
        raise click.ClickException(f"Redis at REDIS_URL is unreachable: {exc}") from exc
    if as_json:
        for row in rows:
            click.echo(json.dumps(row.as_dict()))
        return
    table = Table(title=f"{len(rows)} job(s)")
    for col in ("id", "queue", "where", "ids", "attempt", "age s", "error"):
        table.add_column(col)
    for r in rows:
        ids = ",".join(map(str, r.item_ids[:8])) + (" ..." if len(r.item_ids) > 8 else "")
        table.add_row(
            r.id, r.capability, r.place, ids, str(r.attempt or "-"), str(r.age_s or "-"), r.error[:60]
        )
    Console().print(table)


@jobs.command(name="rm")
@click.argument("job_ids", nargs=-1, required=True)
@click.option("--drop", is_flag=True, help="Delete the payloads too, instead of dead-lettering them.")
@click.option("--force", is_flag=True, help="Also remove jobs a worker is running right now.")
@click.option("--yes", is_flag=True, help="Do not ask.")
@click.pass_context
@config_errors_exit
def rm(ctx: click.Context, job_ids: tuple[str, ...], drop: bool, force: bool, yes: bool) -> None:
    """Remove jobs; their unsettled payloads go to the dead-letter queue (removed_by_operator)."""
    try:
        conn = _connect(ctx)
        rows = {r.id: r for r in find(conn, list(Capability)) if r.id in job_ids}
    except redis.RedisError as exc:
        raise click.ClickException(f"Redis at REDIS_URL is unreachable: {exc}") from exc
    missing = [j for j in job_ids if j not in rows]
    if missing:
        raise click.ClickException(f"no such job: {', '.join(missing)}")
    running = [j for j, r in rows.items() if r.place == "started"]
    if running and not force:
        raise click.ClickException(
            f"running now (a worker may still post results): {', '.join(running)}; --force"
        )
    what = "dropping their payloads" if drop else "dead-lettering their payloads"
    if not yes:
        click.confirm(f"remove {len(rows)} job(s), {what}?", abort=True)
    letters = sum(remove(conn, j, r.queue, keep=not drop) for j, r in rows.items())
    click.echo(f"removed {len(rows)} job(s); {letters} payload(s) dead-lettered")
