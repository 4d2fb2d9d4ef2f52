"""`mindsight dev run` (`make run`): the whole stack locally, with a demo; `mindsight dev redis`: a Redis."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import click

from mindsight.cli.common import config_errors_exit, settings_from


def _default_samples() -> Path:
    """./samples when the working directory has one, else the checkout's samples/ next to the packages."""
    here = Path("samples")
    if here.is_dir():
        return here
    import services

    return Path(services.__file__).resolve().parent.parent / "samples"


@click.group()
def dev() -> None:
    """Development helpers: run everything locally."""


@dev.command("run")
@click.option("--gallery-port", default=5800, show_default=True, type=click.IntRange(1, 65535))
@click.option("--embed-port", default=8001, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--metrics-port", default=9100, show_default=True, type=click.IntRange(0, 65530),
    help="First of the consecutive 127.0.0.1 ports where the router and each worker serve /metrics "
    "(router, then clip, caption, face, text; or router, worker-all); 0 turns them off.",
)  # fmt: skip
@click.option("--no-embed-api", is_flag=True, help="Do not start the /embed_text service.")
@click.option("--embedded-redis", is_flag=True, help="Start a private Redis even when REDIS_URL answers.")
@click.option(
    "--single-process", is_flag=True, help="One `worker all` process instead of one per capability."
)
@click.option(
    "--exit-after-demo", is_flag=True, help="Stop everything once the demo is shown (exit 0 if it worked)."
)
@click.option(
    "--logs", "logs", type=click.Choice(["terminal", "files"]), default="terminal", show_default=True,
    help="Echo the processes' logs here ([name] prefix) or only write them to ./var/logs/<name>.log.",
)  # fmt: skip
@click.option(
    "--models", "models", type=click.Choice(["auto", "configured", "standin"]), default="auto",
    show_default=True,
    help="auto: configured models when on disk, else tiny random stand-ins; configured: never fall back; "
    "standin: always the stand-ins.",
)  # fmt: skip
@click.option(
    "--samples", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="Folder of photos to enqueue [default: ./samples, else the checkout's samples/].",
)  # fmt: skip
@click.option(
    "--var-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("var"), show_default=True,
    help="Where Redis data, the gallery, stand-in models, logs and dev.env go.",
)  # fmt: skip
@click.option("--query", default="a cat", show_default=True, help="Text query of the demo.")
@click.option("--demo-timeout", default=600.0, show_default=True, type=click.FloatRange(1), help="Seconds.")
@click.pass_context
@config_errors_exit
def run(
    ctx: click.Context,
    gallery_port: int,
    embed_port: int,
    metrics_port: int,
    no_embed_api: bool,
    embedded_redis: bool,
    single_process: bool,
    exit_after_demo: bool,
    logs: str,
    models: str,
    samples: Path | None,
    var_dir: Path,
    query: str,
    demo_timeout: float,
) -> None:
    """Start Redis (embedded if none answers), the reference gallery, the router, the workers and the
    embed-api; enqueue the sample photos and a text query; show what was posted; run until Ctrl-C."""
    from services.dev_stack.model_plan import ModelMode
    from services.dev_stack.preflight import metrics_ports
    from services.dev_stack.stack import DevOptions, DevStack
    from shared.errors import ConfigError, MindsightError

    if gallery_port == embed_port and not no_embed_api:
        raise click.BadParameter("--gallery-port and --embed-port must differ")
    if {gallery_port, embed_port} & set(metrics_ports(metrics_port, single_process).values()):
        raise click.BadParameter(
            "the ports from --metrics-port on must not include --gallery-port or --embed-port"
        )
    if not query.strip():
        raise click.BadParameter("--query is empty")
    settings = settings_from(ctx)
    options = DevOptions(
        gallery_port=gallery_port,
        embed_port=embed_port,
        metrics_port=metrics_port,
        embed_api=not no_embed_api,
        embedded_redis=embedded_redis,
        single_process=single_process,
        exit_after_demo=exit_after_demo,
        echo_logs=logs == "terminal",
        models=ModelMode(models),
        samples=samples or _default_samples(),
        var_dir=var_dir,
        query=query,
        demo_timeout_s=demo_timeout,
        env_file=ctx.find_root().obj.get("env_file", ".env"),
    )
    try:
        code = DevStack(settings, options, os.environ).run()
    except MindsightError as exc:
        if isinstance(exc, ConfigError):
            raise  # config_errors_exit: one line, exit status 2
        raise click.ClickException(f"{type(exc).__name__}: {exc}") from exc
    ctx.exit(code)


@dev.command("redis")
@click.option(
    "--dir", "data_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("var/redis"),
    show_default=True, help="Data directory (append-only file, redis.log).",
)  # fmt: skip
@click.option("--port", default=6379, show_default=True, type=click.IntRange(1, 65535))
@config_errors_exit
def redis_server(data_dir: Path, port: int) -> None:
    """A local redis-server with persistence, in the foreground until Ctrl-C (for dev, never production)."""
    from shared.embedded_redis import EmbeddedRedis

    server = EmbeddedRedis(data_dir, port=port).start()
    click.echo(
        f"redis-server ready: REDIS_URL={server.url} (data in {data_dir}, log {data_dir / 'redis.log'})"
    )
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            if server.proc is None or server.proc.poll() is not None:
                code = server.proc.returncode if server.proc else None
                raise click.ClickException(
                    f"redis-server exited with status {code}; see {data_dir / 'redis.log'}"
                )
    finally:
        server.stop()
    click.echo("redis-server stopped")
