"""`mindsight backfill`: (re-)process a whole library on the bulk lane, bounded, resumable.

The library comes from the gallery's user API (GET /api/photos, paged; each item needs `id`, `user_id`
and `path`). Photos are enqueued in ascending id order on the bulk list (REDIS_BULK_QUEUE_NAME), so fresh
uploads never wait behind them (shared.lanes). At most `max_outstanding` photos wait in the bulk lane at
once (the bulk list plus the bulk RQ queues, anyone's bulk work counted), so Redis never holds the
library. Each chunk is pushed in the same MULTI/EXEC that advances the checkpoint (a hash in Redis), so a
backfill killed at any point resumes after the last photo it enqueued: none is skipped, none pushed twice.

Every payload carries `"backfill": <run id>`: a new run's callbacks get new idempotency keys
(shared.idempotency), a resumed run keeps its own. `models` restricts the CLIP labels computed.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import redis
from rq.job import Job
from rq.serializers import JSONSerializer

from shared.lanes import Lane
from shared.payloads import Capability
from shared.queues import backfill_checkpoint
from workers.dispatch import rq_queue

CHECKPOINT_TTL_S = 30 * 24 * 3600
"""A finished or abandoned backfill's checkpoint is kept a month, then fades."""

POLL_S = 0.2
"""How often a backfill at its outstanding bound looks again."""

PHOTO_CAPABILITIES = (Capability.CLIP, Capability.CAPTION, Capability.FACE)


@dataclass(frozen=True)
class BackfillPlan:
    """What to backfill: tasks, optional CLIP labels, id range and pacing."""

    tasks: list[str]
    models: list[str] = field(default_factory=list)
    since_id: int = 0
    limit: int = 0
    rate: float = 0.0
    max_outstanding: int = 512
    chunk: int = 32

    @property
    def name(self) -> str:
        """The checkpoint's name: one per (tasks, models), so different backfills resume separately."""
        return f"tasks={','.join(sorted(self.tasks))}:models={','.join(sorted(self.models)) or '*'}"


@dataclass
class Progress:
    """Where a backfill stands (also what is shown while it runs)."""

    run: str
    last_id: int
    pushed: int
    total: int
    outstanding: int = 0
    resumed: bool = False
    rate: float = 0.0

    def line(self) -> str:
        eta = "-"
        if self.rate > 0:
            left = (self.total - self.pushed + self.outstanding) / self.rate
            eta = f"{left:.0f}s"
        pct = 100.0 * self.pushed / self.total if self.total else 100.0
        return (
            f"backfill {self.run}: {self.pushed}/{self.total} enqueued ({pct:.0f}%), "
            f"{self.outstanding} outstanding, {self.rate:.1f} photos/s, ETA {eta}"
        )


def parse_rate(text: str | None) -> float:
    """`10`, `10/s` or `2.5/s` -> photos per second; empty or 0 means unlimited."""
    if not text:
        return 0.0
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(?:/s)?\s*", text)
    if not m:
        raise ValueError(f"--rate must look like 20/s, got {text!r}")
    return float(m.group(1))


class Backfill:
    """Enqueues a library on the bulk lane within the outstanding bound, checkpointing as it goes."""

    def __init__(
        self,
        connection: redis.Redis,
        bulk_list: str,
        plan: BackfillPlan,
        report: Callable[[Progress], None] = lambda _p: None,
    ) -> None:
        self.connection = connection
        self.bulk_list = bulk_list
        self.plan = plan
        self.key = backfill_checkpoint(plan.name)
        self.report = report
        self._bulk_queues = [rq_queue(connection, cap, Lane.BULK) for cap in PHOTO_CAPABILITIES]

    # -- planning -----------------------------------------------------------------------------------
    def checkpoint(self) -> dict[str, str]:
        """The stored checkpoint ({} when none)."""
        raw = self.connection.hgetall(self.key)
        return {k.decode(): v.decode() for k, v in raw.items()}  # type: ignore[union-attr]  # redis-py stubs: bytes replies

    def todo(
        self, photos: Iterable[dict[str, Any]], fresh: bool = False
    ) -> tuple[list[dict[str, Any]], Progress]:
        """The photos still to enqueue, ascending by id, and the progress they continue."""
        state = {} if fresh else self.checkpoint()
        resumed = bool(state) and state.get("done") != "1"
        after = max(self.plan.since_id, int(state["last_id"])) if resumed else self.plan.since_id
        pushed = int(state.get("pushed", 0)) if resumed else 0
        run = state["run"] if resumed else uuid.uuid4().hex[:12]
        wanted = sorted((p for p in photos if _valid(p) and int(p["id"]) > after), key=lambda p: int(p["id"]))
        if self.plan.limit:
            wanted = wanted[: max(0, self.plan.limit - pushed)]
        return wanted, Progress(run, after, pushed, pushed + len(wanted), resumed=resumed)

    # -- running ------------------------------------------------------------------------------------
    def run(self, photos: list[dict[str, Any]], progress: Progress, wait: bool = True) -> Progress:
        """Enqueue `photos` in chunks within the bound; then (with `wait`) until the lane has drained."""
        started, pushed_here = time.monotonic(), 0
        self._save(progress, start=True)
        for i in range(0, len(photos), self.plan.chunk):
            chunk = photos[i : i + self.plan.chunk]
            progress.outstanding = self._wait_for_room(len(chunk), progress)
            if self.plan.rate > 0:  # pace: the n-th photo of this session goes out no sooner than n/rate
                delay = started + (pushed_here + len(chunk)) / self.plan.rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            self._push(chunk, progress)
            pushed_here += len(chunk)
            progress.rate = pushed_here / max(time.monotonic() - started, 1e-6)
            self.report(progress)
        while wait and (outstanding := self.outstanding()) > 0:
            progress.outstanding = outstanding
            self.report(progress)
            time.sleep(max(POLL_S, 1.0))
        progress.outstanding = 0
        self.connection.hset(self.key, "done", "1")
        self.report(progress)
        return progress

    def outstanding(self) -> int:
        """Photos waiting in the bulk lane: the bulk list, plus the most any capability's bulk queue
        holds (queued or running); every bulk producer's photos count, so the bound is conservative."""
        held = [
            sum(self._payloads(q.get_job_ids() + q.started_job_registry.get_job_ids()))
            for q in self._bulk_queues
        ]
        return int(self.connection.llen(self.bulk_list)) + max(held, default=0)

    def _payloads(self, job_ids: list[str]) -> list[int]:
        counts = []
        for job in Job.fetch_many(job_ids, connection=self.connection, serializer=JSONSerializer):
            if job is None:
                continue
            try:
                counts.append(len(job.args[0]["payloads"]))
            except (IndexError, KeyError, TypeError):
                counts.append(1)
        return counts

    def _wait_for_room(self, n: int, progress: Progress) -> int:
        while (outstanding := self.outstanding()) + n > self.plan.max_outstanding and outstanding > 0:
            progress.outstanding = outstanding
            self.report(progress)
            time.sleep(POLL_S)
        return outstanding

    def _payload(self, photo: dict[str, Any], run: str) -> str:
        job: dict[str, Any] = {
            "photo_id": int(photo["id"]),
            "user_id": int(photo["user_id"]),
            "path": photo["path"],
            "tasks": list(self.plan.tasks),
            "backfill": run,
        }
        if self.plan.models:
            job["models"] = list(self.plan.models)
        return json.dumps(job)

    def _push(self, chunk: list[dict[str, Any]], progress: Progress) -> None:
        """The chunk and the checkpoint move together: a kill leaves both or neither."""
        progress.pushed += len(chunk)
        progress.last_id = int(chunk[-1]["id"])
        with self.connection.pipeline() as pipe:  # MULTI/EXEC
            pipe.lpush(self.bulk_list, *[self._payload(p, progress.run) for p in chunk])
            pipe.hset(self.key, mapping={"last_id": progress.last_id, "pushed": progress.pushed})
            pipe.hset(self.key, "updated_at", time.time())
            pipe.expire(self.key, CHECKPOINT_TTL_S)
            pipe.execute()

    def _save(self, progress: Progress, start: bool) -> None:
        mapping: dict[str, str | int] = {
            "run": progress.run,
            "last_id": progress.last_id,
            "pushed": progress.pushed,
            "total": progress.total,
            "tasks": ",".join(self.plan.tasks),
            "models": ",".join(self.plan.models),
            "done": "0",
        }
        with self.connection.pipeline() as pipe:
            pipe.hset(self.key, mapping=mapping)  # type: ignore[arg-type]  # redis-py stubs: invariant keys
            if start and not progress.resumed:
                pipe.hset(self.key, "started_at", time.time())
            pipe.expire(self.key, CHECKPOINT_TTL_S)
            pipe.execute()


def _valid(photo: Any) -> bool:
    """A listed photo has what a job needs: an int id and user_id, and a path."""
    return (
        isinstance(photo, dict)
        and type(photo.get("id")) is int
        and type(photo.get("user_id")) is int
        and isinstance(photo.get("path"), str)
        and bool(photo["path"])
    )
