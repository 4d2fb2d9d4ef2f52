"""Helpers every subcommand shares: settings from the context, logging, config errors as exit 2."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import click
import redis

from shared.errors import ConfigError
from shared.redaction import redact
from shared.settings import Settings, load_settings

F = TypeVar("F", bound=Callable[..., Any])


def settings_from(ctx: click.Context) -> Settings:
    """Settings for this invocation (the root group's --env-file)."""
    root = ctx.find_root()
    env_file = (root.obj or {}).get("env_file", ".env")
    return load_settings(env_file)


def cli_redis(settings: Settings) -> redis.Redis:
    """The Redis client of every CLI command: it gives up after MINDSIGHT_CLI_REDIS_TIMEOUT_S, never hangs.

    A timeout or refused connection becomes one line at the root group (main.LazyGroup.invoke).
    """
    timeout = settings.redis.cli_timeout_s
    return redis.Redis.from_url(settings.redis.url, socket_connect_timeout=timeout, socket_timeout=timeout)


def config_errors_exit(fn: F) -> F:
    """Turn a ConfigError into a one-line message and exit status 2 instead of a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ConfigError as exc:
            click.echo(redact(f"configuration error: {exc}"), err=True)
            raise SystemExit(2) from exc

    return wrapper  # type: ignore[return-value]
