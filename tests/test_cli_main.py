"""The root `mindsight` command: what every subcommand's failure looks like to an operator."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from click.testing import CliRunner

from mindsight.cli.main import cli
from shared.embedded_redis import free_port
from shared.settings import Settings


@pytest.mark.parametrize(
    "argv",
    [
        ["dlq", "ls"],
        ["dlq", "show", "5f0c2a9e1b7d4c3a"],
        ["dlq", "stats"],
        ["dlq", "requeue", "--all", "--dry-run"],
        ["dlq", "purge", "--all", "--yes"],
        ["status"],
    ],
)
def test_unreachable_redis_is_one_line_not_a_traceback(
    argv: list[str], make_settings: Callable[..., Settings]
) -> None:
    port = free_port()  # nothing listens there
    make_settings(REDIS_URL=f"redis://:s3cret-redis-pw@127.0.0.1:{port}/0")
    result = CliRunner().invoke(cli, ["--env-file", "/dev/null", *argv], catch_exceptions=False)
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: Redis at REDIS_URL is unreachable:"), result.output
    assert f"127.0.0.1:{port}" in lines[0] and "s3cret" not in result.output
