"""`mindsight`: one command whose subcommands start every process of the product.

Subcommands are loaded lazily (click's documented LazyGroup pattern) so that `mindsight dlq ls` or
`mindsight status` start in a fraction of a second without importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

from mindsight import __version__

COMMANDS: dict[str, tuple[str, str]] = {
    "router": ("mindsight.cli.router_cmd", "router"),
    "worker": ("mindsight.cli.worker_cmd", "worker"),
    "dlq": ("mindsight.cli.dlq_cmd", "dlq"),
    "jobs": ("mindsight.cli.jobs_cmd", "jobs"),
    "serve": ("mindsight.cli.serve_cmd", "serve"),
    "enqueue": ("mindsight.cli.enqueue_cmd", "enqueue"),
    "search": ("mindsight.cli.search_cmd", "search"),
    "albums": ("mindsight.cli.albums_cmd", "albums"),
    "models": ("mindsight.cli.models_cmd", "models"),
    "status": ("mindsight.cli.status_cmd", "status"),
    "healthcheck": ("mindsight.cli.status_cmd", "healthcheck"),
    "dev": ("mindsight.cli.dev_cmd", "dev"),
}
"""Subcommand name -> (module, attribute). Each module owns one group of commands."""


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


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mindsight")
@click.option("--env-file", default=".env", show_default=True, help="Read settings from this file too.")
@click.pass_context
def cli(ctx: click.Context, env_file: str) -> None:
    """mindsight-ml: CLIP, captions, faces and text embeddings for a self-hosted photo gallery."""
    ctx.ensure_object(dict)
    ctx.obj["env_file"] = env_file
