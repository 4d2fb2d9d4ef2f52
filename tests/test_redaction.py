"""No password or token in a URL reaches the terminal or a log line."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Iterator

import pytest

from shared.embedded_redis import free_port
from shared.errors import GalleryUnavailable
from shared.gallery_client import GalleryClient
from shared.logging_setup import configure_logging
from shared.redaction import redact, redact_url
from shared.settings import GallerySettings


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:s3cret@redis:6379/0", "redis://:***@redis:6379/0"),
        ("rediss://default:s3cret@redis.example:6380/1", "rediss://default:***@redis.example:6380/1"),
        ("https://alice:s3cret@gallery.example/api", "https://alice:***@gallery.example/api"),
        ("https://s3cret@gallery.example", "https://***@gallery.example"),  # a token as the user name
        ("redis://:p@ss@word@redis:6379/0", "redis://:***@redis:6379/0"),  # unencoded @ in the password
        ("https://alice:p%40ss@gallery.example", "https://alice:***@gallery.example"),
        ("redis://redis:6379/0?password=s3cret&db=2", "redis://redis:6379/0?password=***&db=2"),
        ("http://gallery.example/x?Token=s3cret", "http://gallery.example/x?Token=***"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("http://gallery.example/users/bob@example.com", "http://gallery.example/users/bob@example.com"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_redact_masks_every_url_in_a_message_and_leaves_the_rest() -> None:
    text = (
        "Redis unreachable at REDIS_URL='redis://:pw1@10.0.0.5:6379/0': Error 111; "
        "gallery at http://bob:pw2@gallery:5800 unavailable; mail bob@example.com"
    )
    assert redact(text) == (
        "Redis unreachable at REDIS_URL='redis://:***@10.0.0.5:6379/0': Error 111; "
        "gallery at http://bob:***@gallery:5800 unavailable; mail bob@example.com"
    )
    assert redact("no url here: a=b") == "no url here: a=b"


def test_a_long_line_is_redacted_in_linear_time() -> None:
    line = "://" + "a" * 200_000 + " " + "x://" * 50_000  # would take minutes with a backtracking pattern
    assert redact(line) == line


@pytest.fixture
def root_logging() -> Iterator[None]:
    """Restore the root logger's handlers and level after configure_logging replaced them."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _gallery_failure() -> GalleryUnavailable:
    """A real GalleryClient failure against a gallery URL that carries a password."""
    url = f"http://worker:gallery-pw@127.0.0.1:{free_port()}"
    settings = GallerySettings(api_base_url=url, internal_token="t0ken-for-tests", retries=0, _env_file=None)  # type: ignore[call-arg]
    client = GalleryClient(settings, internal=True)
    try:
        client.healthz()
    except GalleryUnavailable as exc:
        assert "gallery-pw" in str(exc)  # the client's own message names its base URL
        return exc
    finally:
        client.close()
    raise AssertionError("a gallery nobody listens for answered")


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_log_lines_never_carry_a_password(
    fmt: str, root_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("INFO", fmt)
    log = logging.getLogger("workers.jobs")
    exc = _gallery_failure()
    log.warning("gallery unavailable (%s); pausing", exc)
    log.info("router on %s", "redis://:redis-pw@redis:6379/0", extra={"url": "https://u:extra-pw@h/"})
    try:
        raise exc
    except GalleryUnavailable:
        log.exception("job failed")
    err = capsys.readouterr().err
    for secret in ("gallery-pw", "redis-pw", "extra-pw"):
        assert secret not in err
    assert "http://worker:***@127.0.0.1:" in err and "redis://:***@redis:6379/0" in err
    if fmt == "json":
        records = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
        assert len(records) == 3 and records[1]["url"] == "https://u:***@h/"
        assert "http://worker:***@127.0.0.1:" in records[2]["exc"]


def test_uncaught_exceptions_are_logged_masked() -> None:
    """A traceback Python itself would print (main thread or another) goes through the masking handler."""
    code = (
        "import threading\n"
        "from shared.logging_setup import configure_logging\n"
        "configure_logging('INFO', 'text')\n"
        "def fail(): raise RuntimeError('gallery at http://u:thread-pw@g:5800 unavailable')\n"
        "t = threading.Thread(target=fail, name='consumer'); t.start(); t.join()\n"
        "raise RuntimeError('redis://:main-pw@redis:6379/0 is down')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "thread-pw" not in proc.stderr and "main-pw" not in proc.stderr, proc.stderr
    assert "uncaught exception in thread consumer" in proc.stderr and "http://u:***@g:5800" in proc.stderr
    assert "CRITICAL" in proc.stderr and "redis://:***@redis:6379/0 is down" in proc.stderr
