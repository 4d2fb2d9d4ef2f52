"""The one dead-letter writer: any entry, however hostile its strings, is stored and read back unchanged."""

from __future__ import annotations

import json

import pytest
import redis

from shared.dead_letter import DeadLetter, DeadLetterQueue
from shared.errors import BadPayload

HOSTILE = [
    "\ud800",  # a lone surrogate: a valid JSON escape, not encodable as UTF-8
    "x\udcff\ud83d",  # two lone surrogates, one a broken pair
    "nul\x00inside",
    "é✓😀",  # ordinary non-ASCII stays readable
    "\\ud800",  # the escaped form itself must stay distinct from the surrogate
    "x" * 100_000,
]


@pytest.mark.parametrize("text", HOSTILE, ids=range(len(HOSTILE)))
def test_a_dead_letter_with_hostile_strings_is_stored_and_read_back(
    redis_client: redis.Redis, text: str
) -> None:
    dlq = DeadLetterQueue(redis_client, "photo_tasks_dlq")
    letter = DeadLetter.from_exception(
        BadPayload(f"bad {text}"),
        capability="clip",
        payload={"photo_id": 1, "path": text, "tasks": [text], text[:50]: text},
        raw=text,
        worker=text[:50],
    )
    dlq.push(letter)
    [item] = list(dlq.scan())
    assert item.letter == letter
    assert len(dlq) == 1


def test_plain_entries_stay_readable_utf8(redis_client: redis.Redis) -> None:
    """Escaping is the fallback only: the common case keeps non-ASCII text as it is, for humans."""
    dlq = DeadLetterQueue(redis_client, "photo_tasks_dlq")
    dlq.push(DeadLetter(capability="clip", error_type="X", error="é✓", payload={"path": "ü.jpg"}))
    raw = redis_client.lindex("photo_tasks_dlq", 0)
    assert raw is not None and "ü.jpg" in raw.decode("utf-8")
    assert json.loads(raw)["error"] == "é✓"


def test_a_dead_letter_on_a_pipeline_commits_with_it(redis_client: redis.Redis) -> None:
    dlq = DeadLetterQueue(redis_client, "text_tasks_dlq")
    with redis_client.pipeline() as pipe:
        dlq.push(
            DeadLetter(capability="text", error_type="X", error="\ud800", payload={"query": "\ud800"}), pipe
        )
        pipe.execute()
    [item] = list(dlq.scan())
    assert item.letter.payload == {"query": "\ud800"}
