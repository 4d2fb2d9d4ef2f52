"""Check that a container's argv is a real `mindsight` command line, by walking the click tree."""

from __future__ import annotations

from collections.abc import Sequence

import click

from mindsight.cli.main import cli


class NotAMindsightCommand(ValueError):
    """The argv names no `mindsight` subcommand, names a group, or passes options the command lacks."""


def resolve(argv: Sequence[str]) -> click.Command:
    """The click command `mindsight ARGV...` would run; its options and arguments are parsed too."""
    args = list(argv)
    if not args:
        raise NotAMindsightCommand("empty command: the image's CMD is only --help")
    ctx = click.Context(cli, info_name="mindsight")
    cmd: click.Command = cli
    path = ["mindsight"]
    while isinstance(cmd, click.Group) and args and not args[0].startswith("-"):
        name = args.pop(0)
        sub = cmd.get_command(ctx, name)
        if sub is None:
            raise NotAMindsightCommand(f"`{' '.join(path)}` has no subcommand {name!r}")
        path.append(name)
        ctx = click.Context(sub, parent=ctx, info_name=name)
        cmd = sub
    if isinstance(cmd, click.Group):
        raise NotAMindsightCommand(
            f"`{' '.join(path)}` is a group; it needs one of {sorted(cmd.list_commands(ctx))}"
        )
    _parse(cmd, path[-1], args, ctx.parent)
    return cmd


def _parse(cmd: click.Command, name: str, args: list[str], parent: click.Context | None) -> None:
    """Parse the remaining args with click itself: unknown options and extra arguments fail."""
    try:
        sub_ctx = cmd.make_context(name, list(args), parent=parent)
    except click.BadParameter as exc:
        # Paths that exist only inside the container (/samples, /gallery) cannot exist here.
        if exc.param is not None and isinstance(exc.param.type, click.Path):
            return
        raise NotAMindsightCommand(f"mindsight {name} {' '.join(args)}: {exc.format_message()}") from exc
    except click.UsageError as exc:
        raise NotAMindsightCommand(f"mindsight {name} {' '.join(args)}: {exc.format_message()}") from exc
    sub_ctx.close()
