"""Prometheus metrics shared by the router and workers, and the small health/metrics HTTP endpoint.

Every long-running process serves GET /healthz (alive: 503 when a consumer is dead or stuck), /readyz
(models loaded, Redis reachable) and /metrics on MINDSIGHT_METRICS_PORT (0 = off; the images, compose
and k8s set 9100), so compose, Kubernetes and Prometheus can watch it. Every metric of ours is named
`mindsight_*` (the embed API's too); the rest are prometheus_client's standard process_/python_ collectors.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import platform
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)

log = logging.getLogger(__name__)

_STAGE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

JOBS = Counter(
    "mindsight_jobs_total",
    "Photos/texts handled, by capability, model label and outcome.",
    ["capability", "model", "outcome"],  # outcome: done | failed | retried | deferred
)
STAGE_SECONDS = Histogram(
    "mindsight_stage_seconds",
    "Time per batch in each stage.",
    ["capability", "stage"],
    buckets=_STAGE_BUCKETS,
)
BATCH_SIZE = Histogram(
    "mindsight_batch_size", "Items per unit of work.", ["capability"], buckets=(1, 2, 4, 8, 16, 32, 64, 128)
)
QUEUE_DEPTH = Gauge("mindsight_queue_depth", "Length of a Redis list we watch.", ["queue"])
ROUTED = Counter("mindsight_routed_total", "Payloads taken off the backend lists.", ["source", "outcome"])

MODEL_INFO_LABELS = ("capability", "model", "runtime", "precision", "device")
CAPTION_ROLES = frozenset({"captioner", "text_model"})
"""Keys of a caption task's describe() that name a role, not a model label: the model is their source."""


def build_info(registry: CollectorRegistry = REGISTRY) -> Info:
    """`mindsight_build_info{version, python}`: which release runs, so dashboards can tell deploys apart."""
    try:
        version = importlib.metadata.version("mindsight-ml")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree that was never installed
        version = "unknown"
    info = Info(
        "mindsight_build", "The mindsight-ml release and Python this process runs.", registry=registry
    )
    info.info({"version": version, "python": platform.python_version()})
    return info


def model_info_gauge(registry: CollectorRegistry = REGISTRY) -> Gauge:
    """`mindsight_model_info{capability, model, runtime, precision, device} 1` per loaded model."""
    return Gauge(
        "mindsight_model_info", "Models this process runs (1 each), with runtime, precision and device.",
        MODEL_INFO_LABELS, registry=registry,
    )  # fmt: skip


BUILD_INFO = build_info()
MODEL_INFO = model_info_gauge()


def record_models(capability: str, described: Mapping[str, Any], gauge: Gauge = MODEL_INFO) -> None:
    """Publish a task's describe() (label -> runtime facts) as model info series."""
    for key, facts in described.items():
        if not isinstance(facts, Mapping):
            continue
        model = str(facts.get("label") or facts.get("source") or key) if key in CAPTION_ROLES else key
        gauge.labels(
            capability=capability,
            model=model,
            runtime=str(facts.get("runtime", "torch")),
            precision=str(facts.get("precision") or "default"),
            device=str(facts.get("device", "cpu")),
        ).set(1)


ReadyCheck = Callable[[], tuple[bool, dict[str, Any]]]
LiveCheck = Callable[[], list[str]]
"""Returns why the process is not alive (a dead or stuck consumer); empty when it is."""


class _Handler(BaseHTTPRequestHandler):
    ready_check: ReadyCheck = staticmethod(lambda: (True, {}))
    live_check: LiveCheck = staticmethod(lambda: [])

    def do_GET(self) -> None:  # noqa: N802 (http.server naming)
        if self.path.startswith("/healthz"):
            problems = self._problems()
            state = {"status": "unhealthy", "problems": problems} if problems else {"status": "ok"}
            self._send(503 if problems else 200, "application/json", json.dumps(state).encode())
        elif self.path.startswith("/readyz"):
            try:
                ok, detail = type(self).ready_check()
            except Exception as exc:  # a readiness probe must answer, not crash
                ok, detail = False, {"error": str(exc)}
            if problems := self._problems():  # not alive is not ready either
                ok, detail = False, {**detail, "problems": problems}
            body = json.dumps({"ready": ok, **detail}, default=str).encode()
            self._send(200 if ok else 503, "application/json", body)
        elif self.path.startswith("/metrics"):
            self._send(200, CONTENT_TYPE_LATEST, generate_latest())
        else:
            self._send(404, "application/json", b'{"error":"not found"}')

    def _problems(self) -> list[str]:
        try:
            return type(self).live_check()
        except Exception as exc:  # a liveness probe must answer, not crash
            return [f"liveness check failed: {exc}"]

    def _send(self, status: int, ctype: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # probes every few seconds: keep logs quiet
        return


def serve_health(
    port: int, ready_check: ReadyCheck, host: str = "0.0.0.0", live_check: LiveCheck | None = None
) -> ThreadingHTTPServer | None:
    """Start the /healthz /readyz /metrics endpoint in a daemon thread; None when port is 0.

    /healthz answers 503 with the problems when `live_check` reports any, so an orchestrator restarts us.
    """
    if not port:
        return None
    attrs: dict[str, Any] = {"ready_check": staticmethod(ready_check)}
    if live_check is not None:
        attrs["live_check"] = staticmethod(live_check)
    handler = type("HealthHandler", (_Handler,), attrs)
    server = ThreadingHTTPServer((host, port), handler)
    threading.Thread(target=server.serve_forever, name="health-http", daemon=True).start()
    log.info("health and metrics on http://%s:%d/{healthz,readyz,metrics}", host, port)
    return server
