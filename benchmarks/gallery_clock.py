"""The reference gallery, served on a thread of the harness, with a clock on its internal callbacks.

Every approach posts its results here; an ASGI middleware notes when each internal photo callback has
been answered (the row is stored), which is where "LPUSH to callback" ends, and what kind it was: the
route says `faces`; an `ml_result` body's "modality" says `image` or `caption`, its processing_status
"failed" makes it a `failure`. The body is read as it streams past (receive is wrapped, not consumed).
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.gallery.app import create_app
from services.gallery.server import BackgroundServer

_CALLBACK = re.compile(r"^/api/internal/photos/(\d+)/(ml_result|faces)$")

Kind = Literal["image", "caption", "faces", "failure", "unknown"]
"""What a callback delivered: an image embedding, a caption (+ its embedding), a photo's faces, a failure."""


@dataclass(frozen=True)
class Callback:
    """One answered callback: which photo, the HTTP status, when (time.time()), what it delivered.

    `items`: faces in a faces callback, words in a caption callback's caption (0 otherwise).
    """

    photo_id: int
    status: int
    at: float
    kind: Kind = "image"
    items: int = 0


def classify(route: str, body: bytes) -> tuple[Kind, int]:
    """The kind of a callback to `route` (ml_result or faces) with JSON `body`, and its item count."""
    try:
        data: Any = json.loads(body)
    except ValueError:
        return "unknown", 0
    if not isinstance(data, dict):
        return "unknown", 0
    if route == "faces":
        faces = data.get("faces")
        return "faces", len(faces) if isinstance(faces, list) else 0
    if data.get("processing_status") == "failed":
        return "failure", 0
    if data.get("modality") == "caption":
        return "caption", len(str(data.get("caption") or "").split())
    return ("image", 0) if data.get("modality") == "image" else ("unknown", 0)


class CallbackRecorder:
    """Thread-safe log of callbacks that waiters can block on."""

    def __init__(self) -> None:
        self._events: list[Callback] = []
        self._cond = threading.Condition()

    def record(self, event: Callback) -> None:
        with self._cond:
            self._events.append(event)
            self._cond.notify_all()

    def mark(self) -> int:
        """A position in the log; `wait_for(..., since=mark)` ignores what came before it."""
        with self._cond:
            return len(self._events)

    def events(self, since: int) -> list[Callback]:
        """The callbacks recorded after position `since`."""
        with self._cond:
            return list(self._events[since:])

    def wait_for(
        self, photo_ids: set[int], since: int, timeout: float, kind: Kind | None = None
    ) -> dict[int, float]:
        """Block until each photo has a 2xx callback (of `kind`, if given) after `since`; photo id -> time
        of its first one.

        Raises TimeoutError (naming what is missing and any failed callbacks) after `timeout` seconds.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                done: dict[int, float] = {}
                for event in self._events[since:]:
                    wanted = kind is None or event.kind == kind
                    if wanted and event.photo_id in photo_ids and 200 <= event.status < 300:
                        done.setdefault(event.photo_id, event.at)
                if len(done) == len(photo_ids):
                    return done
                left = deadline - time.monotonic()
                if left <= 0:
                    missing = sorted(photo_ids - done.keys())
                    failed = [e for e in self._events[since:] if e.status >= 300]
                    raise TimeoutError(
                        f"{len(missing)} of {len(photo_ids)} photos got no {kind or 'any'} callback within "
                        f"{timeout:.0f}s "
                        f"(first missing: {missing[:5]}; failed callbacks: {failed[:3]})"
                    )
                self._cond.wait(min(left, 1.0))


class CallbackClockMiddleware:
    """Records each internal photo callback, with its kind, once its response has been sent."""

    def __init__(self, app: ASGIApp, recorder: CallbackRecorder) -> None:
        self.app = app
        self.recorder = recorder

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = _CALLBACK.match(scope.get("path", "")) if scope["type"] == "http" else None
        if match is None:
            await self.app(scope, receive, send)
            return
        status = 0
        body = bytearray()

        async def reading_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                body.extend(message.get("body", b""))
            return message

        async def timed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                kind, items = classify(match.group(2), bytes(body))
                self.recorder.record(Callback(int(match.group(1)), status, time.time(), kind, items))

        await self.app(scope, reading_receive, timed_send)


class BenchGallery:
    """The gallery app (no dev fault injection) on a background uvicorn thread, plus photo registration."""

    def __init__(self, root: Path, internal_token: str) -> None:
        self.root = Path(root)
        self.internal_token = internal_token
        self.recorder = CallbackRecorder()
        self.app = create_app(self.root, internal_token, {}, dev=False)
        self.app.add_middleware(CallbackClockMiddleware, recorder=self.recorder)
        self._server = BackgroundServer(self.app)
        self.url = self._server.url

    def start(self) -> BenchGallery:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def add_photo(self, src: Path, copy: int = 0) -> tuple[int, str]:
        """Hard-link (or copy) `src` into uploads/original and create its row: (photo_id, job path).

        `copy` > 0 registers the same file again under another name (another photo of the gallery).
        """
        store = self.app.state.store
        name = f"{src.parent.name}-{src.stem}{f'-{copy}' if copy else ''}{src.suffix}"
        target = store.uploads.dir / name
        if not target.exists():
            try:
                os.link(src, target)
            except OSError:  # another filesystem: a copy reads the same
                target.write_bytes(src.read_bytes())
        photo = store.add_photo(1, name)
        return int(photo["id"]), str(photo["path"])
