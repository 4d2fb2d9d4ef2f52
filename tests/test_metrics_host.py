"""MINDSIGHT_METRICS_HOST: the health and metrics endpoint of router and workers binds where it is told."""

from __future__ import annotations

import socket

import httpx
import pytest

from shared.embedded_redis import free_port
from shared.settings import WorkerSettings
from tests.fixtures.pipeline import Pipeline

pytestmark = pytest.mark.slow  # a real `mindsight router` process


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def test_the_health_endpoint_binds_only_the_configured_host(pipeline: Pipeline) -> None:
    port = free_port()
    # 127.0.0.2 is loopback too, but a socket bound there is not reachable at 127.0.0.1 (0.0.0.0 would be).
    pipeline.router(MINDSIGHT_METRICS_PORT=str(port), MINDSIGHT_METRICS_HOST="127.0.0.2")
    pipeline.wait_for(lambda: _answers(f"http://127.0.0.2:{port}/healthz"), 60, "the router's /healthz")
    with socket.socket() as sock, pytest.raises(ConnectionRefusedError):
        sock.connect(("127.0.0.1", port))


def test_the_default_host_is_every_interface() -> None:
    """Containers publish the port, so the default stays 0.0.0.0; outside them the port defaults to off."""
    settings = WorkerSettings(_env_file=None)  # type: ignore[call-arg]
    assert (settings.metrics_host, settings.metrics_port) == ("0.0.0.0", 0)
