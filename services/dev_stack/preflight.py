"""What `dev run` decides before starting anything: ports, Redis, tokens, the children's environment."""

from __future__ import annotations

import errno
import secrets
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from shared.embedded_redis import find_redis_binary, free_port, reachable
from shared.errors import ConfigError
from shared.settings import Settings

LOOPBACK = "127.0.0.1"
"""Every dev service binds here only: dev tokens must never be reachable from the network."""


class PortInUse(ConfigError):
    """A port `dev run` needs is already taken."""


def check_port(port: int, what: str, flag: str, host: str = LOOPBACK) -> None:
    """Refuse, naming the flag that picks another port, when something already listens on `port`."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Same option uvicorn binds with, so a socket lingering in TIME_WAIT does not count as taken.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                raise PortInUse(
                    f"port {port} ({what}) is already in use: is another `mindsight dev run` (or {what}) "
                    f"running? Stop it, or pick another port with {flag}"
                ) from exc
            raise


@dataclass(frozen=True)
class RedisChoice:
    """The Redis the stack uses: the configured one when it answers, else an embedded one to start."""

    url: str
    embedded: bool
    port: int = 0


def is_loopback(url: str) -> bool:
    """Whether a Redis URL names this machine."""
    return urlsplit(url).hostname in ("127.0.0.1", "localhost", "::1")


def choose_redis(configured_url: str, embedded: bool = False) -> RedisChoice:
    """REDIS_URL when it answers PING (unless `embedded`); else an embedded redis-server's port.

    The embedded one takes REDIS_URL's own port when that is local and free, so other terminals' default
    REDIS_URL reaches it too.
    """
    if not embedded and reachable(configured_url, timeout=1.0):
        return RedisChoice(configured_url, embedded=False)
    find_redis_binary()  # fail now, with its install hint, rather than after starting the gallery
    parts = urlsplit(configured_url)
    port = free_port()
    if is_loopback(configured_url) and parts.port:
        try:
            check_port(parts.port, "redis", "REDIS_URL")
            port = parts.port
        except PortInUse:
            pass  # something else listens there (or the Redis we were told to keep off): keep out of its way
    db = parts.path.strip("/") or "0"
    return RedisChoice(f"redis://{LOOPBACK}:{port}/{db}", embedded=True, port=port)


@dataclass(frozen=True)
class DevTokens:
    """The gallery's internal token (workers) and user 1's bearer token (CLI tools, you)."""

    internal: str
    access: str
    generated: tuple[str, ...]
    """Names of the variables that were unset and got a fresh dev-only value."""


def dev_tokens(settings: Settings) -> DevTokens:
    """The configured tokens, or fresh random ones where they are unset (dev only: never in production)."""
    generated = []
    try:
        internal = settings.gallery.require_internal_token()
    except ConfigError:
        internal = secrets.token_urlsafe(24)
        generated.append("PROCESSING_INTERNAL_TOKEN")
    access = settings.gallery.access_token.get_secret_value().strip()
    if not access:
        access = secrets.token_urlsafe(24)
        generated.append("ACCESS_TOKEN")
    return DevTokens(internal, access, tuple(generated))


def stack_env(
    settings: Settings, redis_url: str, gallery_url: str, gallery_root: Path, tokens: DevTokens
) -> dict[str, str]:
    """Variables every child gets on top of the inherited environment (models come separately)."""
    threads = str(settings.worker.threads)
    return {
        "REDIS_URL": redis_url,
        "API_BASE_URL": gallery_url,
        "PROCESSING_INTERNAL_TOKEN": tokens.internal,
        "ACCESS_TOKEN": tokens.access,
        "PROJECT_ROOT": str(gallery_root),
        "UPLOAD_BASE_DIR": str(gallery_root),
        "MINDSIGHT_THREADS": threads,
        # Off for everything else (the gallery, short CLI runs, dev.env in another terminal): the services
        # that serve /metrics get their own port from metrics_ports() when they start.
        "MINDSIGHT_METRICS_PORT": "0",
        "MINDSIGHT_METRICS_HOST": LOOPBACK,
    }


METRICS_SERVICES = ("router", "worker-clip", "worker-caption", "worker-face", "worker-text")
"""The children that serve /healthz, /readyz and /metrics, in the order their ports are handed out."""


def metrics_ports(base: int, single_process: bool) -> dict[str, int]:
    """Each /metrics-serving child's own port, consecutive from `base` in a fixed order; none when 0.

    Fixed by role rather than by what the model plan starts, so a service's URL does not move between runs
    and every port can be checked before anything starts.
    """
    if base == 0:
        return {}
    names = ("router", "worker-all") if single_process else METRICS_SERVICES
    return {name: base + i for i, name in enumerate(names)}


def process_env(
    inherited: Mapping[str, str], settings: Settings, overrides: Mapping[str, str]
) -> dict[str, str]:
    """The complete environment of a child: inherited, plus runtime knobs, plus `overrides`."""
    env = dict(inherited)
    env.setdefault("OMP_NUM_THREADS", str(settings.worker.threads))  # onnxruntime/dlib/BLAS, like torch's
    env["PYTHONUNBUFFERED"] = "1"  # lines reach the log prefixer as they are written
    env["TOKENIZERS_PARALLELISM"] = "false"
    env.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers' bars too: they garble prefixed logs
    env.update(overrides)
    return env


def write_env_file(path: Path, values: Mapping[str, str]) -> None:
    """Save what the children got, for `mindsight --env-file var/dev.env ...` in another terminal."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["# Written by `mindsight dev run`: the settings its processes run with (dev tokens included)."]
    # Single quotes: dotenv keeps the value verbatim (paths with spaces, tokens with '-' or '_').
    lines += [f"{key}='{value}'" for key, value in values.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    path.chmod(0o600)
