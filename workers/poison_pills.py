"""The poison-pill rule: a payload that took down two router consumers is not handed to a third.

A router catches every error a payload can raise in Python, but a payload can still kill the process
(out of memory, a crash in a C extension, the OOM killer). Whatever a dead consumer held is given back
by the next router; each such recovery counts one crash against the payload (by digest, in Redis, so
the count survives the routers). Payloads with a crash on record are routed alone (see Router), so a
second crash names one payload; at POISON_PILL_CRASHES it is dead-lettered unparsed on recovery.
A payload that is dispatched or dead-lettered has its record dropped in the same transaction.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence

import redis
from redis.client import Pipeline

from shared.dead_letter import DeadLetter, DeadLetterQueue
from shared.queues import ROUTER_CRASHES

log = logging.getLogger(__name__)

POISON_PILL_CRASHES = 2
"""Consumers a payload may take down before it is dead-lettered instead of being routed again. One crash
may be bad luck (a node lost, an OOM kill caused by a neighbour); two in a row is the payload."""

CRASH_RECORD_TTL_S = 7 * 24 * 3600
"""The crash record expires a week after its last change, so a payload removed by hand leaves no trace."""

RAW_KEPT_CHARS = 65536
"""A payload the router dead-letters unparsed is kept verbatim up to this many characters."""


def digest(raw: bytes) -> str:
    """Key of a payload in the crash record."""
    return hashlib.sha1(raw, usedforsecurity=False).hexdigest()


class PoisonPills:
    """Crash record of payloads held by consumers that died."""

    def __init__(self, connection: redis.Redis, consumer_id: str) -> None:
        self.connection = connection
        self.consumer_id = consumer_id

    def suspects(self, items: Sequence[bytes]) -> set[bytes]:
        """The payloads among `items` that a dead consumer held."""
        if not items or not self.connection.exists(ROUTER_CRASHES):
            return set()
        counts = self.connection.hmget(ROUTER_CRASHES, [digest(raw) for raw in items])
        return {raw for raw, count in zip(items, counts, strict=True) if count is not None}

    def forget(self, pipe: Pipeline, items: Sequence[bytes]) -> None:
        """Drop the crash record of `items` (they are settled), inside the caller's transaction."""
        if items:
            pipe.hdel(ROUTER_CRASHES, *[digest(raw) for raw in items])

    def recover_one(self, held: str, source: str, dlq: DeadLetterQueue) -> int | None:
        """Move one payload from a dead consumer's `held` list back to `source`, or dead-letter it.

        Returns 1 when moved back, 0 when dead-lettered, None when `held` is empty. Safe against several
        routers recovering the same list at once (WATCH: the loser retries on the changed list)."""
        with self.connection.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(held)
                    raw = pipe.lindex(held, 0)  # newest first: the oldest ends up next in line
                    if raw is None:
                        return None
                    key = digest(raw)  # type: ignore[arg-type]  # redis-py stubs: bytes replies
                    crashes = int(pipe.hget(ROUTER_CRASHES, key) or 0) + 1
                    pipe.multi()
                    pipe.lrem(held, 1, raw)  # type: ignore[arg-type]  # redis-py stubs: bytes replies
                    if crashes >= POISON_PILL_CRASHES:
                        dlq.push(self._letter(raw, crashes, source), pipe)  # type: ignore[arg-type]  # redis-py stubs: bytes replies
                        pipe.hdel(ROUTER_CRASHES, key)
                    else:
                        pipe.rpush(source, raw)
                        pipe.hset(ROUTER_CRASHES, key, crashes)
                        pipe.expire(ROUTER_CRASHES, CRASH_RECORD_TTL_S)
                    pipe.execute()
                except redis.WatchError:
                    continue
                if crashes >= POISON_PILL_CRASHES:
                    log.error("router: payload on %s took down %d consumers; dead-lettered", source, crashes)
                    return 0
                return 1

    def _letter(self, raw: bytes, crashes: int, source: str) -> DeadLetter:
        return DeadLetter(
            capability=None,
            error_type="PoisonPill",
            error=f"held by {crashes} consumers that died; dead-lettered unparsed",
            raw=raw.decode("utf-8", "replace")[:RAW_KEPT_CHARS],
            worker=self.consumer_id,
            source_queue=source,
        )
