"""The root `mindsight` command: what every subcommand's failure looks like to an operator."""

from __future__ import annotations

import contextlib
import http.server
import socket
import threading
from collections.abc import Callable, Iterator

import pytest
from click.testing import CliRunner

from mindsight.cli.common import cli_redis
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


def test_cli_redis_connections_carry_the_cli_timeout(make_settings: Callable[..., Settings]) -> None:
    # Not left to redis-py's default: before 8.0 (pyproject allows >=5.0) it is "wait forever".
    kwargs = cli_redis(make_settings(MINDSIGHT_CLI_REDIS_TIMEOUT_S="0.5")).connection_pool.connection_kwargs
    assert (kwargs["socket_connect_timeout"], kwargs["socket_timeout"]) == (0.5, 0.5)


@pytest.fixture
def silent_redis() -> Iterator[int]:
    """A port that accepts connections and then never answers (a Redis host dropping its replies)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        yield server.getsockname()[1]


@pytest.fixture
def unanswered_connect() -> Iterator[int]:
    """A port whose accept queue is full, so the kernel drops further SYNs: connecting hangs."""
    with socket.socket() as server, contextlib.ExitStack() as held:
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        port = server.getsockname()[1]
        while True:  # fill the queue until a connect no longer completes
            client = held.enter_context(socket.socket())
            client.settimeout(0.2)
            try:
                client.connect(("127.0.0.1", port))
            except TimeoutError:
                break
        yield port


@pytest.mark.timeout(60)
@pytest.mark.parametrize("where", ["silent_redis", "unanswered_connect"])
@pytest.mark.parametrize(
    "argv",
    [["dlq", "ls"], ["dlq", "stats"], ["jobs", "ls"], ["status"], ["enqueue", "--text", "a cat"]],
    ids=" ".join,
)
def test_a_redis_that_drops_packets_fails_the_command_instead_of_hanging_it(
    argv: list[str], where: str, request: pytest.FixtureRequest, make_settings: Callable[..., Settings]
) -> None:
    port = request.getfixturevalue(where)
    make_settings(
        REDIS_URL=f"redis://:s3cret-redis-pw@127.0.0.1:{port}/0",
        MINDSIGHT_CLI_REDIS_TIMEOUT_S="0.5",
        ACCESS_TOKEN="jwt",
    )
    result = CliRunner().invoke(cli, ["--env-file", "/dev/null", *argv], catch_exceptions=False)
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Redis" in lines[0] and "unreachable" in lines[0], result.output
    assert "s3cret" not in result.output


class _Unhealthy(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(503)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def unhealthy_port() -> Iterator[int]:
    """A real HTTP server whose every answer is 503."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Unhealthy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/healthz?token=s3cret-probe",  # answers 503
        "http://probe:s3cret-probe@127.0.0.1:{port}/healthz",  # urllib reads the userinfo as the host
        "127.0.0.1:{port}/healthz?token=s3cret-probe",  # no scheme: urllib raises ValueError
    ],
)
def test_healthcheck_masks_the_url_it_reports(url: str, unhealthy_port: int) -> None:
    argv = [
        "--env-file",
        "/dev/null",
        "healthcheck",
        "--url",
        url.format(port=unhealthy_port),
        "--timeout",
        "5",
    ]
    result = CliRunner().invoke(cli, argv, catch_exceptions=False)
    assert result.exit_code == 1, result.output
    assert result.output.startswith("unhealthy: ") and "s3cret" not in result.output, result.output
