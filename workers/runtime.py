"""The warm resources of one worker process, built once at start-up and used by every job.

RQ job functions are plain functions looked up by name, so they reach the loaded models through this
module (the equivalent of arq's `ctx`). Nothing here is rebuilt per job.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import redis

from shared.dead_letter import DeadLetterQueue
from shared.errors import GalleryAuthError, describe
from shared.gallery_client import GalleryClient
from shared.payloads import Capability
from shared.settings import Settings
from workers.dispatch import Dispatcher
from workers.photo_decoder import PhotoDecoder
from workers.tasks.base import PhotoTask, TextTask

log = logging.getLogger(__name__)


class PauseControl:
    """Holds a worker off while the gallery is down or refuses our token; exponential, capped backoff."""

    def __init__(self, max_s: float, first_s: float = 1.0, auth_first_s: float = 15.0) -> None:
        self.max_s, self.first_s, self.auth_first_s = max_s, first_s, auth_first_s
        self._until = 0.0
        self._streak = 0
        self._lock = threading.Lock()
        self.reason: str | None = None
        """Why the last delivery was held off; None once the gallery took a callback (readiness)."""

    def defer(self, exc: BaseException) -> float:
        """Start (or lengthen) a pause after `exc`; returns its length in seconds."""
        with self._lock:
            base = self.auth_first_s if isinstance(exc, GalleryAuthError) else self.first_s
            delay = min(self.max_s, base * 2**self._streak)
            self._streak += 1
            self._until = time.monotonic() + delay
            self.reason = "{}: {}".format(*describe(exc))
            return delay

    def clear(self) -> None:
        """The gallery answered: resume at full speed."""
        with self._lock:
            self._streak = 0
            self._until = 0.0
            self.reason = None

    def remaining(self) -> float:
        return max(0.0, self._until - time.monotonic())

    def wait(self, tick: Callable[[], None] | None = None, step: float = 1.0) -> None:
        """Sleep out the pause, calling `tick` (e.g. a heartbeat) every `step` seconds."""
        while (left := self.remaining()) > 0:
            time.sleep(min(step, left))
            if tick is not None:
                tick()


@dataclass
class WorkerContext:
    """Everything a job needs, loaded once."""

    settings: Settings
    connection: redis.Redis
    gallery: GalleryClient
    dispatcher: Dispatcher
    decoder: PhotoDecoder
    photo_tasks: dict[Capability, PhotoTask] = field(default_factory=dict)
    text_task: TextTask | None = None
    pause: PauseControl = field(default_factory=lambda: PauseControl(300))
    name: str = "worker"

    def dlq_for(self, key: str) -> DeadLetterQueue:
        return DeadLetterQueue(self.connection, key)


_current: WorkerContext | None = None


def install(ctx: WorkerContext) -> None:
    """Make `ctx` the context of this process (called once at worker start-up)."""
    global _current
    _current = ctx


def installed() -> WorkerContext | None:
    """The context of this process, or None outside a worker or router (tests, scripts)."""
    return _current


def current() -> WorkerContext:
    """The context installed at start-up; a clear error if a job runs in a process that has none."""
    if _current is None:
        raise RuntimeError("no worker context: RQ jobs of mindsight must run under `mindsight worker ...`")
    return _current
