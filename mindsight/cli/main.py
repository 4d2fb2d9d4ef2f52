"""`mindsight`: one command whose subcommands start every process of the product.

Subcommands are loaded lazily (click's documented LazyGroup pattern) so that `mindsight dlq ls` or
`mindsight status` start in a fraction of a second without importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

from mindsight import __version__
from shared.redaction import redact

COMMANDS: dict[str, tuple[str, str]] = {
    "router": ("mindsight.cli.router_cmd", "router"),
    "worker": ("mindsight.cli.worker_cmd", "worker"),
    "dlq": ("mindsight.cli.dlq_cmd", "dlq"),
    "jobs": ("mindsight.cli.jobs_cmd", "jobs"),
    "serve": ("mindsight.cli.serve_cmd", "serve"),
    "enqueue": ("mindsight.cli.enqueue_cmd", "enqueue"),
    "search": ("mindsight.cli.search_cmd", "search"),
    "albums": ("mindsight.cli.albums_cmd", "albums"),
    "backfill": ("mindsight.cli.backfill_cmd", "backfill"),
    "models": ("mindsight.cli.models_cmd", "models"),
    "status": ("mindsight.cli.status_cmd", "status"),
    "healthcheck": ("mindsight.cli.status_cmd", "healthcheck"),
    "dev": ("mindsight.cli.dev_cmd", "dev"),
}
"""Subcommand name -> (module, attribute). Each module owns one group of commands."""
IMPLICIT_ENV_FILE = ".env"
"""Read when present; an --env-file the user names must exist."""


class LazyGroup(click.Group):
    """A click group that imports a subcommand's module only when that subcommand runs."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module = importlib.import_module(target[0])
        cmd: Any = getattr(module, target[1])
        if not isinstance(cmd, click.Command):
            raise click.ClickException(f"{target[0]}.{target[1]} is not a command")
        return cmd

    def invoke(self, ctx: click.Context) -> Any:
        """Run the subcommand: Redis out of reach is one line, and no error message shows a URL's secret."""
        try:
            return super().invoke(ctx)
        except Exception as exc:
            if _redis_unreachable(exc):
                raise click.ClickException(redact(f"Redis at REDIS_URL is unreachable: {exc}")) from exc
            if not isinstance(exc, click.ClickException):
                raise
            if (safe := redact(exc.message)) == exc.message:
                raise
            if isinstance(exc, click.UsageError):
                raise click.UsageError(safe, exc.ctx) from exc
            raise click.ClickException(safe) from exc


def _redis_unreachable(exc: Exception) -> bool:
    """A Redis connection or timeout error (not a bug such as WRONGTYPE, which keeps its traceback)."""
    # Imported only when a command has failed: `mindsight --help` and the model commands never need redis.
    from redis import exceptions as redis_errors

    return isinstance(exc, redis_errors.ConnectionError | redis_errors.TimeoutError)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mindsight")
@click.option(
    "--env-file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Read settings from this file too; it must exist. Without it, ./.env is read when present.",
)
@click.pass_context
def cli(ctx: click.Context, env_file: str | None) -> None:
    """mindsight-ml: CLIP, captions, faces and text embeddings for a self-hosted photo gallery."""
    ctx.ensure_object(dict)
    # Only the implicit ./.env may be missing: a mistyped --env-file would silently talk to the defaults.
    ctx.obj["env_file"] = env_file if env_file is not None else IMPLICIT_ENV_FILE
