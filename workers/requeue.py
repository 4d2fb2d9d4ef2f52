"""Move dead letters back into work: only the failed capability, atomically per entry.

Each entry is handled in its own WATCH/MULTI/EXEC: the new RQ job and the removal of the entry commit
together or not at all, so an interrupted requeue neither loses nor doubles an entry, and two operators
requeueing at once cannot both take the same one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import redis

from shared.dead_letter import DeadLetterQueue, StoredLetter
from shared.lanes import lane_of_payload
from shared.payloads import Capability
from workers.dispatch import Dispatcher


@dataclass
class RequeueReport:
    """What a requeue did, entry ids by outcome."""

    requeued: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (id, why)


def plan(item: StoredLetter) -> str | None:
    """Why this entry cannot be requeued, or None when it can."""
    letter = item.letter
    if letter.payload is None:
        return "malformed payload (nothing to re-run): fix the producer, then purge it"
    if letter.capability is not None and letter.capability not in {c.value for c in Capability}:
        return f"unknown capability {letter.capability!r}"
    return None


def requeue(
    connection: redis.Redis,
    dispatcher: Dispatcher,
    dlq: DeadLetterQueue,
    items: list[StoredLetter],
    legacy_target: str,
) -> RequeueReport:
    """Requeue `items`; legacy entries (bare payloads) go back whole onto `legacy_target`."""
    report = RequeueReport()
    for item in items:
        why = plan(item)
        if why:
            report.skipped.append((item.letter.id, why))
            continue
        if _requeue_one(connection, dispatcher, dlq, item, legacy_target):
            report.requeued.append(item.letter.id)
        else:
            report.skipped.append((item.letter.id, "no longer in the dead-letter queue"))
    return report


def _requeue_one(
    connection: redis.Redis,
    dispatcher: Dispatcher,
    dlq: DeadLetterQueue,
    item: StoredLetter,
    legacy_target: str,
) -> bool:
    letter = item.letter
    assert letter.payload is not None
    with connection.pipeline() as pipe:
        while True:
            try:
                pipe.watch(dlq.key)
                if pipe.lpos(dlq.key, item.stored) is None:  # type: ignore[arg-type]  # redis-py stubs: bytes replies
                    pipe.unwatch()
                    return False
                pipe.multi()
                if letter.capability is None:
                    pipe.lpush(legacy_target, json.dumps(letter.payload))
                else:
                    cap = Capability(letter.capability)
                    bulk_source = letter.source_queue == dispatcher.bulk_policy.source_queue
                    lane = lane_of_payload(letter.payload, bulk_source)  # bulk work stays bulk work
                    dispatcher.add(pipe, cap, [letter.payload], policy=dispatcher.policy_for(cap, lane))
                dlq.remove(item, pipeline=pipe)
                pipe.execute()
                return True
            except redis.WatchError:
                continue  # the list changed (a new failure arrived): look again
