"""Dev-only: make internal callbacks fail or stall on demand, and record every one of them.

Fault tests need a gallery that is down for a while and then recovers, or that is slow, without
monkeypatching anything: the real server answers the injected status over real HTTP.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

INTERNAL_PREFIX = "/api/internal/"

LOG_CAPACITY = 10_000
"""Callbacks remembered by the recorder; a long dev session must not grow memory forever."""


@dataclass
class Fault:
    """What the next internal callbacks suffer; `remaining` None means until cleared."""

    status: int | None
    delay_s: float
    remaining: int | None
    only: str | None = None
    """Only callbacks whose path contains this (e.g. `/photos/7/`) suffer it; the others pass."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "delay_s": self.delay_s,
            "remaining": self.remaining,
            "only": self.only,
        }


class FaultInjector:
    """Thread-safe holder of the current fault, consumed one callback at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fault: Fault | None = None

    def set(
        self, status: int | None = None, count: int = 0, delay_s: float = 0.0, only: str | None = None
    ) -> Fault | None:
        """Arm a fault for the next `count` callbacks (0: until cleared); no status and no delay clears.

        With `only`, just the callbacks whose path contains it suffer (one photo failing while the
        gallery answers every other request).
        """
        with self._lock:
            if status is None and delay_s <= 0:
                self._fault = None
            else:
                self._fault = Fault(status=status, delay_s=delay_s, remaining=count or None, only=only)
            return self._fault

    def current(self) -> Fault | None:
        with self._lock:
            return self._fault

    def take(self, path: str = "") -> Fault | None:
        """The fault the callback to `path` suffers, counting it down."""
        with self._lock:
            fault = self._fault
            if fault is None or (fault.only is not None and fault.only not in path):
                return None
            if fault.remaining is not None:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._fault = None
            return Fault(fault.status, fault.delay_s, fault.remaining, fault.only)


class CallbackLog:
    """Every internal callback: {"path", "status", "body", "key", "replayed"} in the order answered.

    `key` is the request's Idempotency-Key (None without one); `replayed` says the gallery answered it
    from a stored key and changed nothing."""

    def __init__(self, capacity: int = LOG_CAPACITY) -> None:
        self._lock = threading.Lock()
        self._items: deque[dict[str, Any]] = deque(maxlen=capacity)

    def append(
        self, path: str, status: int, body: Any, key: str | None = None, replayed: bool = False
    ) -> None:
        with self._lock:
            self._items.append(
                {"path": path, "status": status, "body": body, "key": key, "replayed": replayed}
            )

    def items(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(i) for i in self._items]

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


def _decode(body: bytes) -> Any:
    try:
        return json.loads(body) if body else None
    except (ValueError, UnicodeDecodeError):
        return body.decode("utf-8", "replace")


def _header(scope: Scope, name: bytes) -> str | None:
    for k, v in scope.get("headers", []):
        if k == name:
            return bytes(v).decode("latin-1")
    return None


class InternalCallbackMiddleware:
    """ASGI middleware on /api/internal/*: apply the armed fault, then record the request and its status."""

    def __init__(self, app: ASGIApp, faults: FaultInjector, log: CallbackLog) -> None:
        self.app = app
        self.faults = faults
        self.log = log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(INTERNAL_PREFIX):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        key = _header(scope, b"idempotency-key")
        body_sent = False

        async def replay() -> Message:
            nonlocal body_sent
            if not body_sent:
                body_sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        recorded = False

        async def capture(message: Message) -> None:
            nonlocal recorded
            if message["type"] == "http.response.start" and not recorded:
                # Recorded before the status leaves: a client that saw it finds it in the log.
                recorded = True
                replayed = (b"idempotent-replayed", b"true") in message.get("headers", [])
                self.log.append(scope["path"], int(message["status"]), _decode(body), key, replayed)
            await send(message)

        fault = self.faults.take(scope["path"])
        try:
            if fault is not None and fault.delay_s > 0:
                await asyncio.sleep(fault.delay_s)
            if fault is not None and fault.status is not None:
                answer = JSONResponse({"error": f"injected fault {fault.status}"}, status_code=fault.status)
                await answer(scope, replay, capture)
            else:
                await self.app(scope, replay, capture)
        finally:
            if not recorded:  # the app raised before answering: the server will answer 500
                self.log.append(scope["path"], 500, _decode(body), key)
