"""`mindsight status` (queues, dead letters, workers at a glance) and `mindsight healthcheck`."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import click
import redis
from rich.console import Console
from rich.table import Table
from rq.worker import Worker

from mindsight.cli.common import cli_redis, config_errors_exit, settings_from
from shared.lanes import lanes_for
from shared.payloads import Capability
from shared.queues import CONSUMERS_SET, consumer_heartbeat, processing_list, router_unhealthy
from shared.redaction import redact, redact_url
from shared.settings import Settings
from workers.delivery.gallery_health import describe_trouble, read_trouble
from workers.dispatch import rq_queue


def collect(conn: redis.Redis, settings: Settings) -> dict[str, Any]:
    """Everything `status` shows, as plain data."""
    r = settings.redis
    sources = (r.photo_queue, r.photo_bulk_queue, r.text_queue)
    consumers = []
    for raw in sorted(conn.smembers(CONSUMERS_SET)):
        cid = raw.decode()  # type: ignore[union-attr]  # redis-py stubs: bytes replies
        held = sum(int(conn.llen(processing_list(s, cid))) for s in sources)
        unhealthy = conn.get(router_unhealthy(cid))  # why its watchdog stopped it, if it did
        consumers.append(
            {
                "id": cid,
                "alive": bool(conn.exists(consumer_heartbeat(cid))),
                "unhealthy": unhealthy.decode() if unhealthy else None,  # type: ignore[union-attr]  # redis-py stubs: bytes replies
                "holding": held,
            }
        )
    queues = []
    for cap, lane in [(c, lane) for c in Capability for lane in lanes_for(c)]:
        q = rq_queue(conn, cap, lane)
        queues.append(
            {
                "capability": cap.value,
                "lane": lane.value,
                "queued": q.count,
                "running": q.started_job_registry.count,
                "scheduled_retries": q.scheduled_job_registry.count,
                "failed_rq": q.failed_job_registry.count,
                "finished_recent": q.finished_job_registry.count,
            }
        )
    workers = []
    for w in Worker.all(connection=conn):
        workers.append(
            {
                "name": w.name,
                "queues": w.queue_names(),
                "state": w.get_state(),
                "current_job": w.get_current_job_id(),
                "successful": w.successful_job_count,
                "failed": w.failed_job_count,
                "last_heartbeat": str(w.last_heartbeat or ""),
            }
        )
    return {
        "redis": redact_url(settings.redis.url),
        "backend_lists": {name: int(conn.llen(name)) for name in sources},
        "dead_letters": {r.photo_dlq: int(conn.llen(r.photo_dlq)), r.text_dlq: int(conn.llen(r.text_dlq))},
        "routers": consumers,
        "queues": queues,
        "workers": workers,
        "gallery": _trouble(conn, queues),
    }


def _trouble(conn: redis.Redis, queues: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The gallery trouble record with `deferred`: the jobs waiting in the queues meanwhile."""
    trouble = read_trouble(conn)
    if trouble is not None:
        trouble["deferred"] = sum(q["queued"] + q["scheduled_retries"] for q in queues)
    return trouble


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
@config_errors_exit
def status(ctx: click.Context, as_json: bool) -> None:
    """Queue depths, jobs running and failed, dead letters, live routers and workers."""
    settings = settings_from(ctx)
    conn = cli_redis(settings)
    try:
        data = collect(conn, settings)
    except redis.RedisError as exc:
        raise click.ClickException(f"Redis at REDIS_URL is unreachable: {exc}") from exc
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    console = Console()
    trouble = data["gallery"]
    console.print(
        f"gallery: {'ok' if trouble is None else describe_trouble(trouble, trouble['deferred'])}",
        style="red" if trouble else None,
    )
    lists = Table(title=f"backend lists and dead letters ({data['redis']})")
    lists.add_column("list")
    lists.add_column("length", justify="right")
    for name, n in {**data["backend_lists"], **data["dead_letters"]}.items():
        lists.add_row(name, str(n))
    console.print(lists)
    queues = Table(title="capability queues (workers take the interactive lane first)")
    columns = (
        "capability",
        "lane",
        "queued",
        "running",
        "retry scheduled",
        "failed (rq)",
        "finished (recent)",
    )
    for col in columns:
        queues.add_column(col, justify="left" if col in ("capability", "lane") else "right")
    for q in data["queues"]:
        queues.add_row(
            q["capability"],
            q["lane"],
            str(q["queued"]),
            str(q["running"]),
            str(q["scheduled_retries"]),
            str(q["failed_rq"]),
            str(q["finished_recent"]),
        )
    console.print(queues)
    workers = Table(title=f"workers ({len(data['workers'])}) and routers ({len(data['routers'])})")
    for col in ("name", "kind", "queues", "state", "job / holding", "ok", "failed"):
        workers.add_column(col)
    for w in data["workers"]:
        workers.add_row(
            w["name"],
            "worker",
            ",".join(w["queues"]),
            w["state"],
            w["current_job"] or "-",
            str(w["successful"]),
            str(w["failed"]),
        )
    for c in data["routers"]:
        workers.add_row(
            c["id"],
            "router",
            "-",
            f"UNHEALTHY: {c['unhealthy']}" if c["unhealthy"] else "alive" if c["alive"] else "DEAD",
            str(c["holding"]),
            "-",
            "-",
        )
    console.print(workers)


@click.command()
@click.option(
    "--port", type=int, default=9100, show_default=True, help="Local port of the process's /healthz."
)
@click.option("--url", default=None, help="Full URL to probe instead of http://127.0.0.1:PORT/healthz.")
@click.option("--timeout", default=3.0, show_default=True)
def healthcheck(port: int, url: str | None, timeout: float) -> None:
    """Exit 0 when the process's /healthz answers 200 (for Docker HEALTHCHECK; no curl needed)."""
    target = url or f"http://127.0.0.1:{port}/healthz"
    try:
        with urllib.request.urlopen(target, timeout=timeout) as resp:  # noqa: S310 (local probe)
            ok = resp.status == 200
    except (urllib.error.URLError, OSError, ValueError) as exc:  # ValueError: a URL urllib cannot read
        # Both parts masked: urllib's message may repeat the URL (or the userinfo it took for a host name).
        click.echo(f"unhealthy: {redact_url(target)}: {redact(str(exc))}", err=True)
        raise SystemExit(1) from exc
    if not ok:
        raise SystemExit(1)
    click.echo("ok")
