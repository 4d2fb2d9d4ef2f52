"""Priority lanes: interactive work (fresh uploads, searches) is always taken before bulk work (imports,
re-embedding a library), so a photo uploaded during a backfill never waits behind it.

A photo job is bulk when the backend pushes it on the bulk list (REDIS_BULK_QUEUE_NAME, default
`photo_tasks_bulk`) or gives it `"priority": "bulk"`; anything else is interactive, so a backend that
knows nothing of lanes keeps working unchanged. Each photo capability has one RQ queue per lane
(shared.queues.rq_queue_name) and workers list the interactive queue first: RQ takes from the first
non-empty queue in order, so bulk work runs whenever no interactive work waits, and never starves an
idle fleet. Text jobs are searches, always interactive: they have one lane.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from typing import Any

from shared.payloads import Capability, PhotoJob


class Lane(enum.StrEnum):
    """How urgent a job is; workers take the lanes in this order."""

    INTERACTIVE = "interactive"
    BULK = "bulk"


BULK_PRIORITY = "bulk"
"""The value of a photo job's optional `priority` field that puts it on the bulk lane (case ignored)."""


CAPABILITY_PRIORITY: tuple[Capability, ...] = (
    Capability.TEXT, Capability.CLIP, Capability.FACE, Capability.CAPTION
)  # fmt: skip
"""Which capability a worker hosting several takes first, within a lane. A text job is a search someone is
waiting for and costs milliseconds; an image embedding is what makes a photo findable; faces feed people
albums; a caption is the most expensive and the least urgent (it only refines search). On a small box
where one process hosts them all (`mindsight worker photo`), a burst's image embeddings are therefore all
posted before the first caption starts, and a core never idles while any of them is queued."""


def by_priority(capabilities: Iterable[Capability]) -> list[Capability]:
    """`capabilities` without repeats, most urgent first (CAPABILITY_PRIORITY)."""
    return sorted(set(capabilities), key=CAPABILITY_PRIORITY.index)


def lanes_for(capability: Capability) -> list[Lane]:
    """The lanes a capability has, most urgent first."""
    return [Lane.INTERACTIVE] if capability is Capability.TEXT else list(Lane)


def lane_of(job: PhotoJob, from_bulk_list: bool) -> Lane:
    """The lane of one photo job: bulk by its list or by its `priority` field, else interactive."""
    return lane_of_payload({"priority": job.priority}, from_bulk_list)


def lane_of_payload(payload: Mapping[str, Any], from_bulk_list: bool) -> Lane:
    """The lane of a raw photo payload (a dead letter being requeued): the same rule as `lane_of`."""
    priority = payload.get("priority")
    if from_bulk_list or (isinstance(priority, str) and priority.strip().lower() == BULK_PRIORITY):
        return Lane.BULK
    return Lane.INTERACTIVE
