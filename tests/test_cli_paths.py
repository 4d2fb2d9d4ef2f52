"""tests/deploy_support/cli_paths.py: container command lines are checked against the real click tree."""

from __future__ import annotations

import pytest

from tests.deploy_support.cli_paths import NotAMindsightCommand, resolve


def test_resolves_nested_commands_and_parses_their_options() -> None:
    assert resolve(["worker", "clip"]).name == "clip"
    assert resolve(["serve", "embed-api", "--host", "0.0.0.0", "--port", "8001"]).name == "embed-api"
    assert resolve(["healthcheck", "--url", "http://127.0.0.1:9181/"]).name == "healthcheck"
    # Paths that exist only inside a container are not held against the command line.
    assert resolve(["enqueue", "/samples", "--tasks", "clip,face"]).name == "enqueue"


@pytest.mark.parametrize(
    "argv, message",
    [
        ([], "empty"),
        (["nope"], "no subcommand 'nope'"),
        (["worker"], "is a group"),
        (["worker", "clips"], "no subcommand 'clips'"),
        (["router", "--bogus"], "No such option"),
        (["healthcheck", "--port", "not-a-number"], "not-a-number"),
        (["router", "extra-argument"], "unexpected extra argument"),
    ],
)
def test_rejects_what_the_cli_would_reject(argv: list[str], message: str) -> None:
    with pytest.raises(NotAMindsightCommand, match=message):
        resolve(argv)
