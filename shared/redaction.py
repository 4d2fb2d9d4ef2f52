"""Credentials never reach a terminal or a log: `scheme://user:password@host` prints as `user:***@host`.

REDIS_URL (`redis://:password@host`) and API_BASE_URL (`https://user:pass@host`) may carry secrets; every
message the project prints or logs goes through `redact`, the log handler included (logging_setup.py).
"""

from __future__ import annotations

import re

MASK = "***"
"""What a secret is replaced with."""

SECRET_PARAMS = ("password", "passwd", "pwd", "token", "access_token", "secret", "api_key", "apikey")
"""Query parameters whose values are secrets (redis-py reads `?password=`, some galleries `?token=`)."""

# Userinfo runs from `://` to the LAST `@` before the host part ends (`/`, `?`, `#`, whitespace), as
# urlsplit reads it: an unencoded `@` in a password must not leave the rest of the password behind. The
# pattern starts at the literal `://`, so scanning a long log line stays linear.
_USERINFO = re.compile(r"(?<=://)([^\s/?#]*)@")
_PARAM = re.compile(rf"([?&;](?:{'|'.join(SECRET_PARAMS)})=)[^&;#\s'\"]*", re.IGNORECASE)


def _mask_userinfo(match: re.Match[str]) -> str:
    user, colon, _ = match[1].partition(":")
    # `user:secret` keeps the user; a bare `secret` (token as user name) is all secret.
    return f"{user}:{MASK}@" if colon else f"{MASK}@"


def redact(text: str) -> str:
    """`text` with the credentials of every URL in it masked; text without URLs comes back unchanged."""
    if "://" not in text and "=" not in text:
        return text
    return _PARAM.sub(rf"\g<1>{MASK}", _USERINFO.sub(_mask_userinfo, text))


def redact_url(url: str) -> str:
    """One URL, safe to print: `redis://:***@host:6379/0`."""
    return redact(url)
