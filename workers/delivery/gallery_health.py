"""Gallery trouble, shared in Redis: what `mindsight status` shows, and the poison-photo rule.

- The trouble record (one hash): set by any worker that defers work because the gallery is unreachable
  or refuses our token; cleared by the next batch that delivers. `status` prints it as "gallery
  unreachable since ..., N jobs deferred".
- The poison-photo rule: a photo (or text request) whose callback keeps failing while the gallery accepts
  other callbacks is dead-lettered as `gallery_rejected_repeatedly` once its first failure is older than
  MINDSIGHT_GALLERY_REJECT_AFTER_S. A gallery failing on every callback accepts none, so an outage is
  waited out and never drains the queue.
"""

from __future__ import annotations

import time
from typing import Any

import redis

from shared.errors import GalleryAuthError, describe

TROUBLE_KEY = "mindsight:gallery:trouble"
LAST_OK_KEY = "mindsight:gallery:last_ok"
FAILING_KEY = "mindsight:gallery:failing:{capability}:{item}"

TROUBLE_TTL_S = 3600
"""A record nobody refreshes (every worker gone) fades after an hour instead of lying forever."""


def record_trouble(connection: redis.Redis, exc: BaseException, deferred: int, worker: str) -> None:
    """Note that `worker` deferred `deferred` items because of `exc` (keeps the first `since`).

    `deferrals` counts every deferral (an item deferred five times counts five); `status` reports the
    jobs actually waiting instead, from the queues.
    """
    kind = "token_rejected" if isinstance(exc, GalleryAuthError) else "unreachable"
    error_type, message = describe(exc)
    with connection.pipeline() as pipe:
        pipe.hsetnx(TROUBLE_KEY, "since", time.time())
        pipe.hset(
            TROUBLE_KEY,
            mapping={"kind": kind, "reason": f"{error_type}: {message}"[:500], "worker": worker},
        )
        pipe.hincrby(TROUBLE_KEY, "deferrals", deferred)
        pipe.expire(TROUBLE_KEY, TROUBLE_TTL_S)
        pipe.execute()


def delivered(connection: redis.Redis, capability: str, items: list[Any]) -> None:
    """Callbacks for `items` went through: the gallery works, and their failure clocks stop."""
    with connection.pipeline() as pipe:
        pipe.set(LAST_OK_KEY, time.time())
        pipe.delete(TROUBLE_KEY)
        for item in items:
            pipe.delete(FAILING_KEY.format(capability=capability, item=item))
        pipe.execute()


def read_trouble(connection: redis.Redis) -> dict[str, Any] | None:
    """The trouble record ({"kind", "since", "reason", "deferrals", "worker"}), or None when all is well."""
    raw = connection.hgetall(TROUBLE_KEY)
    if not raw:
        return None
    data = {k.decode(): v.decode("utf-8", "replace") for k, v in raw.items()}  # type: ignore[union-attr]  # redis-py stubs: bytes replies
    return {
        "kind": data.get("kind", "unreachable"),
        "since": float(data.get("since", 0) or 0),
        "reason": data.get("reason", ""),
        "deferrals": int(data.get("deferrals", 0) or 0),
        "worker": data.get("worker", ""),
    }


def describe_trouble(trouble: dict[str, Any], waiting: int) -> str:
    """One line for humans: "gallery unreachable since 2026-12-03 07:40:12 UTC, 3 jobs deferred (...)"."""
    since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(trouble["since"]))
    what = "gallery rejects our token" if trouble["kind"] == "token_rejected" else "gallery unreachable"
    return f"{what} since {since}, {waiting} jobs deferred ({trouble['reason']})"


def failing_since(connection: redis.Redis, capability: str, item: Any, ttl_s: int) -> float:
    """When this item's callbacks started failing (recorded now if this is the first failure)."""
    key = FAILING_KEY.format(capability=capability, item=item)
    now = time.time()
    connection.set(key, now, nx=True, ex=max(60, 2 * ttl_s))
    stored = connection.get(key)
    return float(stored) if stored is not None else now


def others_delivered_since(connection: redis.Redis, since: float) -> bool:
    """Did the gallery accept any callback after `since`? (Then the failing item is the problem.)"""
    stored = connection.get(LAST_OK_KEY)
    return stored is not None and float(stored) > since


def forget_failing(connection: redis.Redis, capability: str, item: Any) -> None:
    """The item was delivered or dead-lettered: a later failure starts a fresh clock."""
    connection.delete(FAILING_KEY.format(capability=capability, item=item))
