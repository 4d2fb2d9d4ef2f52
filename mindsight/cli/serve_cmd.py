"""`mindsight serve ...`: the HTTP services (reference gallery for development, text-embedding API)."""

from __future__ import annotations

import secrets
from pathlib import Path

import click

from mindsight.cli.common import config_errors_exit, settings_from


@click.group()
def serve() -> None:
    """Run one of the HTTP services in the foreground."""


@serve.command("gallery-dev")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5800, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--root",
    default="./var/gallery",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the SQLite file and uploads live.",
)
@click.pass_context
@config_errors_exit
def gallery_dev(ctx: click.Context, host: str, port: int, root: Path) -> None:
    """The reference gallery (SQLite, fault injection on): for development and demos, not production."""
    from services.gallery.server import run_foreground

    settings = settings_from(ctx)
    internal_token = settings.gallery.require_internal_token()
    access_token = settings.gallery.access_token.get_secret_value().strip()
    if not access_token:
        access_token = secrets.token_urlsafe(24)
        banner = "=" * 72
        click.secho(banner, fg="yellow", err=True)
        click.secho(
            "ACCESS_TOKEN is not set: generated a dev token for user 1 (valid until exit):",
            fg="yellow",
            bold=True,
            err=True,
        )
        click.secho(f"    export ACCESS_TOKEN={access_token}", fg="yellow", bold=True, err=True)
        click.secho(banner, fg="yellow", err=True)
    root = root.resolve()
    click.echo(f"gallery root {root}: workers must run with PROJECT_ROOT={root}", err=True)
    click.echo(f"API_BASE_URL=http://{host}:{port}", err=True)
    run_foreground(root, internal_token, {access_token: 1}, host=host, port=port, dev=True)


@serve.command("embed-api")
@click.option("--host", default=None, help="Bind address [default: EMBED_API_HOST]")
@click.option("--port", default=None, type=click.IntRange(1, 65535), help="Port [default: EMBED_API_PORT]")
@click.pass_context
@config_errors_exit
def embed_api(ctx: click.Context, host: str | None, port: int | None) -> None:
    """The /embed_text service: CLIP text embeddings over HTTP for the gallery backend."""
    from services.embed_api.server import run  # lazy: pulls in the models only for this command

    settings = settings_from(ctx)
    run(settings, host or settings.embed_api.host, port or settings.embed_api.port)
