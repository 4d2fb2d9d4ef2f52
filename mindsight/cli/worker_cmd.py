"""`mindsight worker clip|caption|face|text|photo|all`: RQ workers with their models loaded once."""

from __future__ import annotations

import logging

import click
import redis
from rq.serializers import JSONSerializer

from mindsight.cli.common import config_errors_exit, settings_from
from shared.lanes import by_priority
from shared.logging_setup import configure_logging
from shared.metrics import serve_health
from shared.payloads import Capability
from shared.queues import RQ_QUEUES
from workers.bootstrap import build_context
from workers.dispatch import lane_queues
from workers.rq_worker import MindsightWorker, work_until_stopped
from workers.runtime import WorkerContext

log = logging.getLogger(__name__)


@click.group()
def worker() -> None:
    """Run an RQ worker for one capability (several with --also)."""


def run_worker(ctx: click.Context, capabilities: list[Capability], burst: bool) -> None:
    """Load models, then work the capability queues; outlast Redis outages (models kept)."""
    settings = settings_from(ctx)
    configure_logging(settings.worker.log_level, settings.worker.log_format)
    wctx = build_context(settings, capabilities)
    queues = lane_queues(wctx.connection, capabilities)

    def ready() -> tuple[bool, dict[str, object]]:
        return readiness(wctx, capabilities)

    serve_health(settings.worker.metrics_port, ready, host=settings.worker.metrics_host)

    def make_worker() -> MindsightWorker:
        return MindsightWorker(
            queues,
            connection=wctx.connection,
            serializer=JSONSerializer,
            heartbeat_s=settings.worker.heartbeat_s,
            abandoned_after_s=settings.worker.abandoned_after_s,
            pause=wctx.pause,
            job_timeout_s=settings.worker.job_timeout_s,
            maintenance_interval=max(30, settings.worker.heartbeat_s * 3),
            job_monitoring_interval=settings.worker.heartbeat_s,
        )

    work_until_stopped(make_worker, burst)


def readiness(wctx: WorkerContext, capabilities: list[Capability]) -> tuple[bool, dict[str, object]]:
    """/readyz: Redis answers and the gallery takes our callbacks (not down, not refusing our token)."""
    try:
        wctx.connection.ping()
    except redis.RedisError as exc:
        return False, {"redis": str(exc)}
    tasks = {c.value: t.describe() for c, t in wctx.photo_tasks.items()}
    if wctx.text_task:
        tasks["text"] = wctx.text_task.describe()
    gallery = wctx.pause.reason
    return gallery is None, {
        "capabilities": [c.value for c in capabilities],
        "models": tasks,
        "gallery": "ok" if gallery is None else f"cannot deliver: {gallery}",
        "paused_s": round(wctx.pause.remaining(), 1),
    }


def _make(cap: Capability) -> click.Command:
    @click.command(name=cap.value, help=f"Work the '{RQ_QUEUES[cap]}' queue (and its bulk lane).")
    @click.option("--also", default="", help="Comma-separated capabilities to host in the same process.")
    @click.option("--burst", is_flag=True, help="Exit when the queues are empty (tests, batch imports).")
    @click.pass_context
    @config_errors_exit
    def command(ctx: click.Context, also: str, burst: bool) -> None:
        caps = [cap] + [
            Capability(c.strip()) for c in also.split(",") if c.strip() and c.strip() != cap.value
        ]
        run_worker(ctx, caps, burst)

    return command


for _cap in Capability:
    worker.add_command(_make(_cap))


PHOTO_CAPABILITIES = (Capability.CLIP, Capability.FACE, Capability.CAPTION)
"""What `worker photo` hosts: every capability a photo job can ask for."""


def _hosted(ctx: click.Context, capabilities: tuple[Capability, ...]) -> list[Capability]:
    """`capabilities` in priority order, without captions when CAPTION_ENABLED is off."""
    caps = by_priority(capabilities)
    if not settings_from(ctx).caption.enabled:
        caps.remove(Capability.CAPTION)
    return caps


@worker.command(name="photo")
@click.option("--burst", is_flag=True, help="Exit when the queues are empty.")
@click.pass_context
@config_errors_exit
def photo_capabilities(ctx: click.Context, burst: bool) -> None:
    """Host clip, face and caption in one process (the small-box layout: one process per core).

    Queues are taken in priority order (image embeddings, then faces, then captions), so search works
    for a burst before its captions are done, and no core idles while any photo work is queued.
    """
    run_worker(ctx, _hosted(ctx, PHOTO_CAPABILITIES), burst)


@worker.command(name="all")
@click.option("--burst", is_flag=True, help="Exit when the queues are empty.")
@click.pass_context
@config_errors_exit
def all_capabilities(ctx: click.Context, burst: bool) -> None:
    """Host every capability in one process, text queries too: one decode serves all of them."""
    run_worker(ctx, _hosted(ctx, (*PHOTO_CAPABILITIES, Capability.TEXT)), burst)
