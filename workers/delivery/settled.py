"""Which items of a job are settled (delivered or dead-lettered), kept in the job's RQ meta.

The meta is saved to Redis as each item settles, so whoever handles the job's failure (the worker itself,
or the router cleaning up after a dead worker) splits off only the items that still need work.
"""

from __future__ import annotations

from typing import Any

from rq.job import Job

META_KEY = "settled"


def mark(job: Job | None, index: int) -> None:
    """Record that item `index` of `job` needs no more work (no-op outside an RQ job)."""
    if job is None:
        return
    done = set(job.meta.get(META_KEY, []))
    done.add(index)
    job.meta[META_KEY] = sorted(done)
    job.save_meta()


def unsettled(job: Job, payloads: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The payloads of `job` not yet settled, in order."""
    done = set(job.meta.get(META_KEY, []))
    return [p for i, p in enumerate(payloads) if i not in done]
