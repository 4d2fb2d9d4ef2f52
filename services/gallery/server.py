"""Run the gallery with uvicorn: in the foreground (`mindsight serve gallery-dev`) or on a thread (tests)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from services.gallery.app import create_app


class BackgroundServer:
    """An ASGI app served by uvicorn on a daemon thread; `start()` returns once it accepts connections."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app = app
        # Bind here, not in uvicorn: port 0 then gives a free port with no race against other tests.
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self.host, self.port = self._sock.getsockname()[:2]
        config = uvicorn.Config(
            app, log_level="warning", access_log=False, lifespan="on", timeout_graceful_shutdown=2
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._serve, name=f"gallery-{self.port}", daemon=True)
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _serve(self) -> None:
        try:
            self._server.run(sockets=[self._sock])
        except BaseException as exc:  # surfaced by start(); a thread has nowhere else to report it
            self._error = exc

    def start(self, timeout: float = 10.0) -> BackgroundServer:
        """Start serving; raise if uvicorn is not accepting connections within `timeout` seconds."""
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if self._error is not None or not self._thread.is_alive():
                raise RuntimeError(f"gallery server failed to start: {self._error!r}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"gallery server did not start within {timeout}s")
            time.sleep(0.005)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Ask uvicorn to exit, wait for the thread, release the socket."""
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._sock.close()


def run_foreground(
    root: Path, internal_token: str, access_tokens: Mapping[str, int], host: str, port: int, dev: bool = True
) -> None:
    """Serve the gallery until interrupted (Ctrl-C)."""
    app = create_app(root, internal_token, access_tokens, dev=dev)
    uvicorn.run(app, host=host, port=port, log_level="info")
