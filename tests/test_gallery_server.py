"""The threaded uvicorn runner behind the gallery_server fixture: fast start, clean stop."""

from __future__ import annotations

import socket
import sqlite3
import threading
import time
from pathlib import Path

import httpx
import pytest

from services.gallery.app import create_app
from services.gallery.server import BackgroundServer


def test_starts_fast_and_stops_cleanly(tmp_path: Path) -> None:
    app = create_app(tmp_path, "tok", {"u": 1}, dev=True)
    begin = time.perf_counter()
    server = BackgroundServer(app).start()
    started_in = time.perf_counter() - begin
    client = httpx.Client(base_url=server.url)  # keep-alive connection left open on purpose
    assert client.get("/healthz").status_code == 200
    begin = time.perf_counter()
    server.stop()
    stopped_in = time.perf_counter() - begin
    client.close()

    assert started_in < 1.0, f"start took {started_in:.2f}s"
    assert stopped_in < 3.0, f"stop took {stopped_in:.2f}s"
    assert not [t for t in threading.enumerate() if t.name == f"gallery-{server.port}"]
    with socket.socket() as s:  # the port is free again
        assert s.connect_ex(("127.0.0.1", server.port)) != 0
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        app.state.store.get_photo(1)  # lifespan shutdown closed the database


def test_two_servers_side_by_side(tmp_path: Path) -> None:
    a = BackgroundServer(create_app(tmp_path / "a", "tok", {"u": 1}, dev=True)).start()
    b = BackgroundServer(create_app(tmp_path / "b", "tok", {"u": 1}, dev=True)).start()
    try:
        assert a.port != b.port
        assert httpx.get(f"{a.url}/healthz").status_code == httpx.get(f"{b.url}/healthz").status_code == 200
    finally:
        a.stop()
        b.stop()


def test_stop_does_not_wait_for_a_stalled_callback(tmp_path: Path) -> None:
    app = create_app(tmp_path, "tok", {"u": 1}, dev=True)
    server = BackgroundServer(app).start()
    app.state.faults.set(delay_s=60, count=1)
    outcome: list[object] = []

    def call() -> None:
        try:
            outcome.append(httpx.post(f"{server.url}/api/internal/text_queries/1", timeout=30).status_code)
        except httpx.HTTPError as exc:
            outcome.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    time.sleep(0.3)  # the request is now sleeping inside the server
    begin = time.perf_counter()
    server.stop()
    assert time.perf_counter() - begin < 5
    caller.join(10)
    assert outcome and outcome[0] != 200  # cancelled: uvicorn answers 500 or drops the connection
