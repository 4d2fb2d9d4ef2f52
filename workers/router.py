"""The router: consumes the backend's lists reliably and fans jobs out into the capability queues.

Reliability: each payload is moved atomically (LMOVE, a batch of them per round trip; BLMOVE while the
list is empty) from the backend list to this consumer's own processing list, and removed from it only
in the same MULTI/EXEC that creates its RQ jobs (or its dead-letter entry). A router killed at any
point leaves its payloads in its processing list; a live router gives them back to the backend list
once the dead one's heartbeat key has expired. Several routers may run at once.

Lanes (shared.lanes): the bulk list (REDIS_BULK_QUEUE_NAME) has its own consume thread and batch size
(MINDSIGHT_BULK_BATCH_SIZE); its jobs, and photo jobs marked `"priority": "bulk"`, go to the capability's
bulk RQ queue, which workers take only when the interactive one is empty.

Batching: after the first payload arrives, whatever else is already waiting (up to the batch size) goes
in the same unit of work. When the capability queues still hold work (workers busy), the router waits up
to MINDSIGHT_BATCH_WAIT_MS for more, since nothing would start sooner anyway; when workers are idle a lone
photo is dispatched at once.

Housekeeping, every few seconds: consumer heartbeat, recovery of dead consumers' payloads, RQ registry
clean-up (which is what turns a dead worker's job into a retry), and moving due retries out of RQ's
scheduled registry.

Liveness means the consumers are alive. A watchdog in the housekeeping loop checks that every consume
thread is running and has come round its loop within CONSUMER_STUCK_AFTER_S. If one is dead or stuck,
the router withholds its heartbeat (so its held payloads are recovered by another router), records why
for `mindsight status`, answers 503 on /healthz, and stops with exit code 1 so it is restarted.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import redis
from rq.registry import clean_registries
from rq.scheduler import RQScheduler
from rq.serializers import JSONSerializer
from rq.worker_registration import WORKERS_BY_QUEUE_KEY

from shared.dead_letter import DeadLetter, DeadLetterQueue
from shared.lanes import Lane, lane_of, lanes_for
from shared.metrics import QUEUE_DEPTH, ROUTED
from shared.payloads import Capability, decode_payload, validate_photo_job, validate_text_job
from shared.queues import (
    CONSUMERS_SET,
    ROUTER_CRASHES,
    all_rq_queue_names,
    consumer_heartbeat,
    processing_list,
    router_unhealthy,
)
from shared.settings import Settings
from workers.dispatch import Dispatcher, job_size, rq_queue
from workers.poison_pills import RAW_KEPT_CHARS, PoisonPills

log = logging.getLogger(__name__)

PHOTO_CAPS = (Capability.CLIP, Capability.CAPTION, Capability.FACE)

CONSUMER_STUCK_AFTER_S = 120.0
"""A consume thread that has not come round its loop for this long is stuck. One round blocks at most
about a second plus MINDSIGHT_BATCH_WAIT_MS; a dispatch is a few Redis round trips. Two minutes means a
hung connection or a bug, never a slow moment."""

UNHEALTHY_RECORD_TTL_S = 24 * 3600
"""How long `mindsight status` shows why a router stopped itself."""


class Router:
    """One consumer of the photo and text lists (a thread each) plus housekeeping."""

    def __init__(
        self,
        connection: redis.Redis,
        settings: Settings,
        consumer_id: str | None = None,
        stuck_after_s: float = CONSUMER_STUCK_AFTER_S,
    ) -> None:
        self.connection = connection
        self.settings = settings
        self.redis_settings = settings.redis
        self.worker = settings.worker
        self.consumer_id = consumer_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.dispatcher = Dispatcher(connection, settings.worker, settings.redis)
        self.poison_pills = PoisonPills(connection, self.consumer_id)
        self.stop_event = threading.Event()
        self.caption_enabled = settings.caption.enabled
        self.alive_ttl_s = max(3 * settings.worker.heartbeat_s, 5)
        self.sources = (
            self.redis_settings.photo_queue,
            self.redis_settings.photo_bulk_queue,
            self.redis_settings.text_queue,
        )
        self.stuck_after_s = stuck_after_s
        self._threads: dict[str, threading.Thread] = {}
        self._progress: dict[str, float] = {}  # consume thread -> when it last came round its loop
        self._unhealthy: list[str] = []  # why the watchdog stopped us (sticky)
        # Checked on the batching hot path: the RQ list whose backlog means "workers are busy".
        self._busy_keys = {
            self.redis_settings.photo_queue: rq_queue(connection, Capability.CLIP).key,
            self.redis_settings.photo_bulk_queue: rq_queue(connection, Capability.CLIP, Lane.BULK).key,
            self.redis_settings.text_queue: rq_queue(connection, Capability.TEXT).key,
        }
        # Read in the same round trip as each take: how many workers serve each capability queue the
        # source feeds, so that a take is cut into jobs that spread over them (dispatch.job_size).
        lanes = {
            self.redis_settings.photo_queue: (Lane.INTERACTIVE, PHOTO_CAPS),
            self.redis_settings.photo_bulk_queue: (Lane.BULK, PHOTO_CAPS),
            self.redis_settings.text_queue: (Lane.INTERACTIVE, (Capability.TEXT,)),
        }
        self._worker_keys = {
            source: [(cap, WORKERS_BY_QUEUE_KEY % rq_queue(connection, cap, lane).name) for cap in caps]
            for source, (lane, caps) in lanes.items()
        }
        # Due RQ retries are moved back to their queues here, so workers need no scheduler process.
        self.scheduler = RQScheduler(
            all_rq_queue_names(),
            connection=connection,
            serializer=JSONSerializer,
            logging_level=logging.WARNING,
        )

    # -- lifecycle ----------------------------------------------------------------------------------
    def run(self) -> None:
        """Consume until stop() is called or the watchdog finds a dead or stuck consumer."""
        self._threads = {
            src: threading.Thread(
                target=self._consume_forever, args=(src,), name=f"consume-{src}", daemon=True
            )
            for src in self.sources
        }
        now = time.monotonic()
        for src, t in self._threads.items():
            self._progress[src] = now
            t.start()
        log.info("router %s consuming %s", self.consumer_id, ", ".join(self.sources))
        self._housekeeping_forever()
        for t in self._threads.values():
            t.join(timeout=10)

    def stop(self) -> None:
        self.stop_event.set()

    def problems(self) -> list[str]:
        """Why this router is not alive: dead or stuck consume threads (empty when healthy)."""
        if self._unhealthy:
            return list(self._unhealthy)
        now = time.monotonic()
        found = []
        for source, thread in self._threads.items():
            if not thread.is_alive():
                if not self.stop_event.is_set():
                    found.append(f"consume thread for {source} is dead")
            elif (idle := now - self._progress[source]) > self.stuck_after_s:
                found.append(f"consume thread for {source} stuck for {idle:.0f}s")
        return found

    def exit_code(self) -> int:
        """1 when the watchdog stopped the router (so it is restarted), else 0."""
        return 1 if self._unhealthy else 0

    def _give_up(self, problems: list[str]) -> None:
        self._unhealthy = problems
        log.error("router %s UNHEALTHY: %s; stopping", self.consumer_id, "; ".join(problems))
        try:
            self.connection.set(
                router_unhealthy(self.consumer_id), "; ".join(problems), ex=UNHEALTHY_RECORD_TTL_S
            )
        except redis.RedisError as exc:
            log.warning("router: could not record the reason in Redis (%s)", exc)
        self.stop()

    # -- consuming ----------------------------------------------------------------------------------
    def _consume_forever(self, source: str) -> None:
        """Consume `source` until stopped. Nothing but a stop request ends this loop: Redis errors are
        waited out, and any other error settles the payloads we hold one by one, so the one that caused
        it is dead-lettered with the exception and the rest are routed."""
        backoff = 0.5
        while not self.stop_event.is_set():
            self._progress[source] = time.monotonic()
            try:
                self.drain_processing(source)  # whatever a previous crash of ours left behind
                while not self.stop_event.is_set():
                    self._progress[source] = time.monotonic()
                    self.consume_once(source, block_s=1.0)
                    backoff = 0.5
            except redis.RedisError as exc:
                log.warning("router: Redis unavailable on %s (%s); retrying in %.1fs", source, exc, backoff)
                self.stop_event.wait(backoff)
                backoff = min(backoff * 2, 10.0)
            except Exception as exc:
                log.exception("router: unexpected error on %s; settling held payloads one by one", source)
                self.settle_one_by_one(source, exc)

    def consume_once(self, source: str, block_s: float = 1.0) -> int:
        """Take up to one batch from `source` and dispatch it; returns the number of payloads taken."""
        mine = processing_list(source, self.consumer_id)
        self._register()
        batch_size = self._batch_size(source)
        taken = self._take(source, mine, batch_size)
        items = taken.items
        if not items:
            first = self.connection.blmove(source, mine, block_s, "RIGHT", "LEFT")  # type: ignore[arg-type]  # redis-py stubs: bytes replies
            if first is None:
                return 0
            taken = self._take(source, mine, batch_size - 1)
            items = [first, *taken.items]  # type: ignore[list-item]  # redis-py stubs: bytes replies
        deadline = time.monotonic() + self.worker.batch_wait_ms / 1000
        while len(items) < batch_size:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not taken.workers_busy:
                break
            item = self.connection.blmove(source, mine, max(remaining, 0.01), "RIGHT", "LEFT")  # type: ignore[arg-type]  # redis-py stubs: bytes replies
            if item is None:
                break
            taken = self._take(source, mine, batch_size - len(items) - 1)
            items += [item, *taken.items]  # type: ignore[list-item]  # redis-py stubs: bytes replies
        self._dispatch_isolating_suspects(
            source, mine, items, taken.crash_record, taken.backlog, taken.workers
        )
        return len(items)

    def _take(self, source: str, mine: str, count: int) -> _Taken:
        """Move up to `count` payloads from `source` to `mine` in one round trip.

        Each LMOVE is atomic on its own, exactly as when sent one by one; the pipeline only saves the
        round trips. The same round trip reads, after the moves, whether any crash record exists (so a
        payload given back by a recovery before we moved it is seen as a suspect) and whether the
        workers are busy (the batching wait)."""
        with self.connection.pipeline(transaction=False) as pipe:
            for _ in range(count):
                pipe.lmove(source, mine, "RIGHT", "LEFT")
            pipe.exists(ROUTER_CRASHES)
            pipe.llen(self._busy_keys[source])
            pipe.llen(source)
            for _, key in self._worker_keys[source]:
                pipe.scard(key)
            replies = pipe.execute()
        workers = dict(
            zip(
                (cap for cap, _ in self._worker_keys[source]),
                replies[-len(self._worker_keys[source]) :],
                strict=True,
            )
        )
        *moved, crash_record, busy, backlog = replies[: -len(workers)]
        items = [raw for raw in moved if raw is not None]
        return _Taken(items, bool(crash_record), bool(busy), int(backlog), workers)

    def _dispatch_isolating_suspects(
        self,
        source: str,
        mine: str,
        items: list[bytes],
        crash_record: bool = True,
        backlog: int = 0,
        workers: Mapping[Capability, int] | None = None,
    ) -> None:
        """Dispatch `items`; payloads held by a consumer that died go alone, the other suspects back.

        If a suspect kills us too, our processing list then holds it and nothing else, so the next
        recovery counts the second crash against that payload only (see poison_pills). `crash_record`
        False means no crash record existed after the last of `items` was moved: none is a suspect."""
        suspects = self.poison_pills.suspects(items) if crash_record else set()
        if not suspects:
            self.dispatch(source, mine, items, backlog, workers)
            return
        clean = [raw for raw in items if raw not in suspects]
        if clean:
            self.dispatch(source, mine, clean)
        first, *others = [raw for raw in items if raw in suspects]
        with self.connection.pipeline() as pipe:
            for raw in reversed(others):  # back to the consuming end, in their order
                pipe.lrem(mine, 1, raw)  # type: ignore[arg-type]  # redis-py stubs: bytes replies
                pipe.rpush(source, raw)
            pipe.execute()
        self.dispatch(source, mine, [first])

    def settle_one_by_one(self, source: str, batch_error: BaseException) -> None:
        """After an unexpected error: dispatch each held payload alone; dead-letter the ones that fail."""
        mine = processing_list(source, self.consumer_id)
        for raw in self.connection.lrange(mine, 0, -1):
            try:
                self.dispatch(source, mine, [raw])  # type: ignore[list-item]  # redis-py stubs: bytes replies
            except redis.RedisError:
                raise
            except Exception as exc:
                log.error(
                    "router: payload on %s failed alone (%s: %s); dead-lettered",
                    source,
                    type(exc).__name__,
                    exc,
                )
                with self.connection.pipeline() as pipe:
                    self._dlq(source).push(self._letter(exc, raw, source), pipe)  # type: ignore[arg-type]  # redis-py stubs: bytes replies
                    pipe.lrem(mine, 1, raw)  # type: ignore[arg-type]  # redis-py stubs: bytes replies
                    self.poison_pills.forget(pipe, [raw])  # type: ignore[list-item]  # redis-py stubs: bytes replies
                    pipe.execute()
                ROUTED.labels(source, "crashed").inc()
        log.debug("router: settled after %s", type(batch_error).__name__)

    def _batch_size(self, source: str) -> int:
        bulk = source == self.redis_settings.photo_bulk_queue
        return self.worker.bulk_batch_size if bulk else self.worker.batch_size

    def drain_processing(self, source: str) -> None:
        """Dispatch payloads left in our own processing list (after a Redis error or a restart)."""
        mine = processing_list(source, self.consumer_id)
        while items := self.connection.lrange(mine, 0, self._batch_size(source) - 1):
            self.dispatch(source, mine, items)  # type: ignore[arg-type]  # redis-py stubs: bytes replies

    def dispatch(
        self,
        source: str,
        processing: str,
        items: list[bytes],
        backlog: int = 0,
        workers: Mapping[Capability, int] | None = None,
    ) -> None:
        """Create the jobs (or dead letters) for `items` and drop them from `processing`, atomically.

        `backlog` payloads still wait in `source` and `workers` serve each capability's queue: each
        capability's share of `items` is cut into jobs that spread it, with that backlog, over those
        workers (dispatch.job_size). Without counts (recovery paths) a take stays one job."""
        is_text = source == self.redis_settings.text_queue
        from_bulk_list = source == self.redis_settings.photo_bulk_queue
        groups: dict[tuple[Capability, Lane], list[dict[str, Any]]] = defaultdict(list)
        letters: list[DeadLetter] = []
        for raw in items:
            try:
                # Decoded once: the dict is both what is validated and what the job carries (the
                # payload exactly as the backend sent it, extra fields kept for the dead-letter record).
                payload = decode_payload(raw, self.redis_settings.max_payload_bytes)
                if is_text:
                    validate_text_job(payload)
                    groups[(Capability.TEXT, Lane.INTERACTIVE)].append(payload)
                    continue
                job = validate_photo_job(payload)
                caps = job.capabilities(self.caption_enabled)
                if not caps:
                    log.debug("photo %s: no task for us in %s", job.photo_id, job.tasks)
                lane = lane_of(job, from_bulk_list)
                for cap in caps:
                    groups[(cap, lane)].append(payload)
            except Exception as exc:  # hostile input is normal input: whatever reading it raised
                letters.append(self._letter(exc, raw, source))
        dlq = self._dlq(source)
        with self.connection.pipeline() as pipe:
            for (cap, lane), payloads in groups.items():
                size = job_size(len(payloads), backlog, (workers or {}).get(cap, 1))
                for start in range(0, len(payloads), size):
                    chunk = payloads[start : start + size]
                    self.dispatcher.add(pipe, cap, chunk, policy=self.dispatcher.policy_for(cap, lane))
            for letter in letters:
                dlq.push(letter, pipe)
            for raw in items:
                pipe.lrem(processing, 1, raw)  # type: ignore[arg-type]  # redis-py stubs: bytes replies
            self.poison_pills.forget(pipe, items)
            pipe.execute()
        ROUTED.labels(source, "dispatched").inc(len(items) - len(letters))
        if letters:
            ROUTED.labels(source, "malformed").inc(len(letters))
            for letter in letters:
                log.warning("malformed payload on %s dead-lettered: %s", source, letter.error)

    def _dlq(self, source: str) -> DeadLetterQueue:
        is_text = source == self.redis_settings.text_queue
        return DeadLetterQueue(
            self.connection, self.redis_settings.text_dlq if is_text else self.redis_settings.photo_dlq
        )

    def _letter(self, exc: BaseException, raw: bytes, source: str) -> DeadLetter:
        """A dead letter for a payload the router could not hand on: kept verbatim, not parsed again."""
        return DeadLetter.from_exception(
            exc,
            capability=None,
            raw=raw.decode("utf-8", "replace")[:RAW_KEPT_CHARS],
            worker=self.consumer_id,
            source_queue=source,
        )

    # -- housekeeping -------------------------------------------------------------------------------
    def _register(self) -> None:
        now = time.monotonic()
        if now - getattr(self, "_last_beat", 0.0) < 1.0 or self.problems():
            return  # an unhealthy router withholds its heartbeat: what it holds will be recovered
        self._last_beat = now
        with self.connection.pipeline() as pipe:
            pipe.sadd(CONSUMERS_SET, self.consumer_id)
            pipe.set(consumer_heartbeat(self.consumer_id), "1", ex=self.alive_ttl_s)
            pipe.execute()

    def _housekeeping_forever(self) -> None:
        interval = max(1.0, self.worker.heartbeat_s / 2)
        while not self.stop_event.is_set():
            if problems := self.problems():
                self._give_up(problems)
                return
            try:
                self.housekeeping()
            except redis.RedisError as exc:
                log.warning("router housekeeping: Redis unavailable (%s)", exc)
            except Exception:  # a failure callback's bug must not end housekeeping; the next round retries
                log.exception("router housekeeping failed")
            self.stop_event.wait(interval)

    def housekeeping(self) -> None:
        """One round of heartbeat, dead-consumer recovery, RQ registry clean-up and retry scheduling."""
        self._last_beat = 0.0
        self._register()
        self.recover_dead_consumers()
        queues = [rq_queue(self.connection, cap, lane) for cap in Capability for lane in lanes_for(cap)]
        for queue in queues:
            clean_registries(queue)  # abandoned jobs -> failure callback -> retry / split / dead letter
        scheduler = self.scheduler
        if scheduler.acquire_locks():
            try:
                scheduler.enqueue_scheduled_jobs()
            finally:
                scheduler.release_locks()
        for name in (*self.sources, self.redis_settings.photo_dlq, self.redis_settings.text_dlq):
            QUEUE_DEPTH.labels(name).set(self.connection.llen(name))
        for queue in queues:
            QUEUE_DEPTH.labels(f"rq:{queue.name}").set(self.connection.llen(queue.key))

    def recover_dead_consumers(self) -> int:
        """Give payloads held by consumers whose heartbeat expired back to the backend lists.

        A payload held by a consumer that died is a suspect; one that was held by POISON_PILL_CRASHES
        dead consumers is dead-lettered unparsed instead, so it cannot take down the next router."""
        moved = 0
        for raw_id in self.connection.smembers(CONSUMERS_SET):
            cid = raw_id.decode()  # type: ignore[union-attr]  # redis-py stubs: bytes replies
            if cid == self.consumer_id or self.connection.exists(consumer_heartbeat(cid)):
                continue
            for source in self.sources:
                held = processing_list(source, cid)
                while (outcome := self.poison_pills.recover_one(held, source, self._dlq(source))) is not None:
                    moved += outcome
            self.connection.srem(CONSUMERS_SET, cid)
        if moved:
            log.warning("router: recovered %d payload(s) from dead consumers", moved)
        return moved


@dataclass(frozen=True)
class _Taken:
    """What one `_take` round trip moved and read."""

    items: list[bytes]
    crash_record: bool
    """A crash record existed after the moves (some payload may be a suspect)."""
    workers_busy: bool
    """The capability queue that means "workers are busy" held work."""
    backlog: int = 0
    """Payloads left in the source list after the moves."""
    workers: dict[Capability, int] = field(default_factory=dict)
    """Workers registered on each capability queue the source feeds."""
