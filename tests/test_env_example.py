""".env.example documents every setting exactly once, with a comment, its true default and no secret."""

from __future__ import annotations

import collections
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from mindsight.cli.common import settings_from
from mindsight.cli.main import cli
from shared.errors import ConfigError
from shared.settings import RedisSettings, Settings, load_settings
from tests.deploy_support.settings_catalog import (
    COMPOSE_ONLY,
    REPO,
    example_lines,
    settings_env_vars,
)

EXAMPLE = REPO / ".env.example"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No setting from the test process's environment leaks into load_settings."""
    for name in settings_env_vars():
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(REPO / "tests")  # no stray ./.env is picked up either


def test_catalog_sees_every_group_and_alias_choice() -> None:
    env = settings_env_vars()
    assert {"REDIS_URL", "PROCESSING_INTERNAL_TOKEN", "MINDSIGHT_MODELS_DIR", "CAPTION_ENABLED"} <= set(env)
    # AliasChoices: every spelling is an env name of the same field.
    assert {env[n].field for n in ("MINDSIGHT_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")} == {
        "offline"
    }
    assert env["PROCESSING_INTERNAL_TOKEN"].secret and not env["REDIS_URL"].secret


def test_every_setting_is_listed_exactly_once() -> None:
    counts = collections.Counter(line.name for line in example_lines())
    missing = sorted(set(settings_env_vars()) - set(counts))
    assert not missing, f".env.example lacks {missing}"
    twice = sorted(name for name, n in counts.items() if n > 1)
    assert not twice, f".env.example lists {twice} more than once"


def test_every_variable_has_its_own_comment() -> None:
    uncommented = [f"line {line.lineno}: {line.name}" for line in example_lines() if not line.comment_above]
    assert not uncommented, f"no explanatory comment directly above: {uncommented}"


def test_no_unknown_variables() -> None:
    known = set(settings_env_vars()) | COMPOSE_ONLY
    unknown = sorted({line.name for line in example_lines()} - known)
    assert not unknown, f".env.example lists variables nothing reads: {unknown}"


def test_compose_only_variables_are_optional_and_used_by_compose() -> None:
    compose_text = (REPO / "docker-compose.yml").read_text() + (
        REPO / "deploy/docker-compose.gpu.yml"
    ).read_text()
    for line in example_lines():
        if line.name in COMPOSE_ONLY:
            assert not line.active, f"{line.name} should be a commented-out default"
            if line.name != "COMPOSE_PROFILES":  # docker compose's own variable
                assert "${" + line.name in compose_text, f"{line.name} is not used by the compose files"


def test_secrets_are_present_but_empty() -> None:
    secrets = {name for name, var in settings_env_vars().items() if var.secret}
    assert "PROCESSING_INTERNAL_TOKEN" in secrets
    by_name = {line.name: line for line in example_lines()}
    for name in secrets:
        assert by_name[name].active and by_name[name].value == "", f"{name} must be listed empty"
    token = by_name["PROCESSING_INTERNAL_TOKEN"]
    text = EXAMPLE.read_text()
    block = "\n".join(text.splitlines()[token.lineno - 5 : token.lineno])
    assert "REQUIRED" in block, "the token's comment must say it is required"


@pytest.mark.usefixtures("clean_env")
def test_listed_values_are_the_real_defaults() -> None:
    from_example = load_settings(EXAMPLE)
    defaults = load_settings(env_file=None)
    assert from_example.model_dump() == defaults.model_dump()


@pytest.mark.usefixtures("clean_env")
def test_a_copied_example_refuses_to_start_without_a_token() -> None:
    settings = load_settings(EXAMPLE)
    with pytest.raises(ConfigError, match="PROCESSING_INTERNAL_TOKEN"):
        settings.gallery.require_internal_token()


def test_optional_lines_parse_as_real_values(tmp_path: Path, clean_env: None) -> None:
    """Uncommenting every optional line still gives a configuration the loader accepts."""
    text = EXAMPLE.read_text()
    for line in example_lines():
        if not line.active and line.name not in COMPOSE_ONLY:
            text = text.replace(f"# {line.name}={line.value}", f"{line.name}={line.value}")
    env_file = tmp_path / "all.env"
    env_file.write_text(text)
    settings = load_settings(env_file)
    assert settings.paths.project_root is not None and settings.face.model_dir is not None
    # The active MINDSIGHT_OFFLINE=0 wins over its aliases: AliasChoices takes the first name present.
    assert settings.store.offline is False


def test_a_named_env_file_must_exist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 9 item 6: a typo in --env-file is an error, not a silent run against the default Redis."""
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["--env-file", str(tmp_path / "typo.env"), "dlq", "ls"])
    assert result.exit_code == 2, result.output
    assert "typo.env" in result.output and "does not exist" in result.output


def test_the_implicit_env_file_is_optional(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_env: None
) -> None:
    """Without --env-file, a missing ./.env is fine; a present one is read."""
    monkeypatch.chdir(tmp_path)
    assert settings_of(CliRunner(), []).redis.url == RedisSettings.model_fields["url"].default
    (tmp_path / ".env").write_text("REDIS_URL=redis://127.0.0.1:6379/14\n")
    assert settings_of(CliRunner(), []).redis.url == "redis://127.0.0.1:6379/14"


def settings_of(runner: CliRunner, args: list[str]) -> Settings:
    """The Settings a subcommand would load, through the real root group and its --env-file handling."""
    seen: list[Settings] = []

    @click.command("probe")
    @click.pass_context
    def probe(ctx: click.Context) -> None:
        seen.append(settings_from(ctx))

    # The real root group's option and callback, with a probe as its only subcommand.
    root = click.Group("mindsight", params=cli.params, callback=cli.callback, commands=[probe])
    result = runner.invoke(root, [*args, "probe"])
    assert result.exit_code == 0, result.output
    return seen[0]
