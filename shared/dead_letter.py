"""Dead-letter queues: one JSON entry per photo and capability that could not be done, on a Redis list.

Entries are pushed with LPUSH (newest first), like the backend's own queues, onto REDIS_DLQ_NAME (photo
jobs) or TEXT_EMBED_DLQ_NAME (text jobs). An entry keeps the original payload so an operator can requeue
just the failed capability. Entries written by the legacy runner (a bare payload) are read as well.
"""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import redis
from redis.client import Pipeline

from shared.errors import describe


@dataclass
class DeadLetter:
    """One failed (photo or text request, capability)."""

    capability: str | None  # None: the payload was unreadable, so no capability could be chosen
    error_type: str
    error: str
    payload: dict[str, Any] | None = None
    raw: str | None = None  # the undecodable payload, verbatim, when `payload` is None
    attempts: int = 1
    failed_at: float = field(default_factory=time.time)
    worker: str = field(default_factory=socket.gethostname)
    source_queue: str = ""
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])

    @classmethod
    def from_exception(cls, exc: BaseException, **kw: Any) -> DeadLetter:
        """Build an entry whose error type and message come from `exc`."""
        error_type, message = describe(exc)
        return cls(error_type=error_type, error=message, **kw)

    def to_json(self) -> str:
        """The stored form: readable UTF-8 JSON, or all-ASCII escapes when a string cannot be UTF-8.

        Never raises: a lone surrogate ("\\ud800" is a valid JSON escape, so payloads carry them) makes
        the UTF-8 form unencodable; the escaped form holds the same text and reads back identically,
        so writing a dead letter can never itself fail (a dead letter of a dead letter is impossible).
        """
        data = asdict(self)
        text = json.dumps(data, separators=(",", ":"), ensure_ascii=False, default=repr)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = json.dumps(data, separators=(",", ":"), ensure_ascii=True, default=repr)
        return text

    @classmethod
    def from_json(cls, raw: str | bytes) -> DeadLetter:
        """Parse an entry; anything that is not ours becomes a `legacy` entry holding it verbatim."""
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if isinstance(data, dict) and "error_type" in data and "id" in data:
            known = {f for f in cls.__dataclass_fields__}
            return cls(**{k: v for k, v in data.items() if k in known})
        payload = data if isinstance(data, dict) else None
        return cls(
            capability=None,
            error_type="legacy",
            error="entry written by another runner",
            payload=payload,
            raw=None if payload is not None else text,
            attempts=0,
            failed_at=0.0,
            worker="",
            id="legacy-" + uuid.uuid5(uuid.NAMESPACE_OID, text).hex[:10],
        )

    @property
    def photo_id(self) -> int | None:
        value = (self.payload or {}).get("photo_id")
        return value if isinstance(value, int) else None


@dataclass(frozen=True)
class StoredLetter:
    """An entry together with the exact bytes it is stored as (needed to remove it atomically)."""

    letter: DeadLetter
    stored: bytes


class DeadLetterQueue:
    """Read and write one dead-letter list."""

    def __init__(self, connection: redis.Redis, key: str) -> None:
        self.connection = connection
        self.key = key

    def push(self, letter: DeadLetter, pipeline: Pipeline | None = None) -> None:
        """Add an entry (newest first)."""
        (pipeline if pipeline is not None else self.connection).lpush(self.key, letter.to_json())

    def __len__(self) -> int:
        return int(self.connection.llen(self.key))

    def scan(self, batch: int = 500) -> Iterator[StoredLetter]:
        """Every entry, newest first, read in pages so a huge DLQ does not load at once."""
        start = 0
        while True:
            chunk = self.connection.lrange(self.key, start, start + batch - 1)
            if not chunk:
                return
            for stored in chunk:
                yield StoredLetter(DeadLetter.from_json(stored), stored)  # type: ignore[arg-type]  # redis-py stubs: bytes replies
            start += len(chunk)

    def select(
        self, capability: str | None = None, error_type: str | None = None, ids: set[str] | None = None
    ) -> list[StoredLetter]:
        """Entries matching every given filter."""
        out = []
        for item in self.scan():
            letter = item.letter
            if capability and letter.capability != capability:
                continue
            if error_type and letter.error_type != error_type:
                continue
            if ids and letter.id not in ids:
                continue
            out.append(item)
        return out

    def stats(self) -> dict[str, Counter[str]]:
        """Counts by capability and by error type."""
        by_cap: Counter[str] = Counter()
        by_type: Counter[str] = Counter()
        for item in self.scan():
            by_cap[item.letter.capability or "-"] += 1
            by_type[item.letter.error_type] += 1
        return {"capability": by_cap, "error_type": by_type}

    def remove(self, item: StoredLetter, pipeline: Pipeline | None = None) -> None:
        """Remove exactly this entry (one occurrence of its stored bytes)."""
        (pipeline if pipeline is not None else self.connection).lrem(self.key, 1, item.stored)  # type: ignore[arg-type]  # redis-py stubs: bytes replies
