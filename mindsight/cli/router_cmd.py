"""`mindsight router`: consume the backend lists and fan out into the capability queues."""

from __future__ import annotations

import logging
import signal

import click
import redis

from mindsight.cli.common import config_errors_exit, settings_from
from shared.logging_setup import configure_logging
from shared.metrics import serve_health
from workers.bootstrap import build_context
from workers.router import Router

log = logging.getLogger(__name__)


@click.command()
@click.pass_context
@config_errors_exit
def router(ctx: click.Context) -> None:
    """Move jobs from REDIS_QUEUE_NAME / TEXT_EMBED_QUEUE_NAME into the clip/caption/face/text queues."""
    settings = settings_from(ctx)
    configure_logging(settings.worker.log_level, settings.worker.log_format)
    # No models here, but failure callbacks of dead workers' jobs run in this process and post
    # "failed" statuses to the gallery, so the router holds a gallery client too.
    build_context(settings, [], name="router")
    connection = redis.Redis.from_url(settings.redis.url, health_check_interval=30)
    the_router = Router(connection, settings)

    def ready() -> tuple[bool, dict[str, object]]:
        try:
            connection.ping()
        except redis.RedisError as exc:
            return False, {"redis": str(exc)}
        return True, {"consumer": the_router.consumer_id}

    serve_health(
        settings.worker.metrics_port, ready, host=settings.worker.metrics_host, live_check=the_router.problems
    )
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: the_router.stop())
    the_router.run()
    log.info("router stopped")
    # Non-zero when the watchdog stopped us: an orchestrator restarts the process.
    ctx.exit(the_router.exit_code())
