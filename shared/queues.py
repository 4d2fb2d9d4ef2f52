"""Names of every Redis key this project owns, in one place."""

from __future__ import annotations

from shared.lanes import Lane, lanes_for
from shared.payloads import Capability

RQ_QUEUES: dict[Capability, str] = {
    Capability.CLIP: "clip",
    Capability.CAPTION: "caption",
    Capability.FACE: "face",
    Capability.TEXT: "text",
}
"""One RQ queue per capability, so each scales and fails on its own (these are the interactive lanes)."""

BULK_SUFFIX = "_bulk"


def rq_queue_name(capability: Capability, lane: Lane = Lane.INTERACTIVE) -> str:
    """The RQ queue of a capability's lane: `clip` (interactive, the name before lanes) or `clip_bulk`."""
    name = RQ_QUEUES[capability]
    return name if lane is Lane.INTERACTIVE else f"{name}{BULK_SUFFIX}"


def all_rq_queue_names() -> list[str]:
    """Every RQ queue of every capability and lane (for the scheduler, clean-up and dashboards)."""
    return [rq_queue_name(cap, lane) for cap in Capability for lane in lanes_for(cap)]


KEY_PREFIX = "mindsight"


def processing_list(source_queue: str, consumer_id: str) -> str:
    """Per-consumer list holding payloads popped from `source_queue` but not yet handed to RQ."""
    return f"{KEY_PREFIX}:processing:{source_queue}:{consumer_id}"


def consumer_heartbeat(consumer_id: str) -> str:
    """Key that exists (with a TTL) while a router consumer is alive."""
    return f"{KEY_PREFIX}:router:alive:{consumer_id}"


def router_unhealthy(consumer_id: str) -> str:
    """Key holding why a router's watchdog stopped it (shown by `mindsight status`)."""
    return f"{KEY_PREFIX}:router:unhealthy:{consumer_id}"


CONSUMERS_SET = f"{KEY_PREFIX}:router:consumers"
"""Every router consumer id ever registered; used to find processing lists of dead consumers."""

REQUEUE_INFLIGHT = f"{KEY_PREFIX}:dlq:requeue-inflight"
"""Entries moved out of a DLQ by `dlq requeue` and not yet enqueued; finished on the next requeue."""

WORKER_PAUSE = f"{KEY_PREFIX}:pause"
"""Set (with a TTL) when the gallery rejects our token, so every worker holds off together."""

ROUTER_CRASHES = f"{KEY_PREFIX}:router:crashes"
"""Hash: payload digest -> how many router consumers died holding it (the poison-pill rule)."""


def backfill_checkpoint(name: str) -> str:
    """Hash with the progress of one `mindsight backfill` (run id, last photo id enqueued, counts)."""
    return f"{KEY_PREFIX}:backfill:{name}"
