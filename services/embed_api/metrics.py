"""Prometheus metrics of the embedding API, kept in a registry of the app's own (one per app instance)."""

from __future__ import annotations

import time
from collections.abc import Iterable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.metrics import build_info, model_info_gauge

LATENCY_BUCKETS = (0.002, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
"""Dense around 5-30 ms: the latency target of a single short query on CPU is p50 < 15 ms."""

OTHER_ROUTE = "other"
"""Route label of paths the app does not serve, so scanners cannot blow up label cardinality."""


class EmbedApiMetrics:
    """Request counts and latency by route and status, and texts embedded and inference time by model."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        build_info(self.registry)
        self.model_info = model_info_gauge(self.registry)
        self.requests = Counter(
            "mindsight_embed_api_requests_total", "HTTP requests by route, method and status.",
            ["route", "method", "status"], registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "mindsight_embed_api_request_duration_seconds", "Request to last response byte, by route.",
            ["route"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.texts = Counter(
            "mindsight_embed_api_texts_embedded_total", "Texts embedded, by model label.",
            ["model"], registry=self.registry,
        )  # fmt: skip
        self.inference = Histogram(
            "mindsight_embed_api_inference_seconds", "Model time per embedding call (a call embeds a batch).",
            ["model"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip

    def embedded(self, label: str, count: int, seconds: float) -> None:
        """Count `count` texts embedded by `label` in one call of `seconds`."""
        self.texts.labels(label).inc(count)
        self.inference.labels(label).observe(seconds)

    def render(self) -> bytes:
        """The Prometheus text exposition of this registry."""
        return generate_latest(self.registry)


class RequestMetricsMiddleware:
    """Pure ASGI middleware (no per-request task or body copy) timing every HTTP request."""

    def __init__(self, app: ASGIApp, metrics: EmbedApiMetrics, routes: Iterable[str]) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = frozenset(routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # what the client sees if the app dies before answering

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            path = scope.get("path", "")
            route = path if path in self.routes else OTHER_ROUTE
            self.metrics.requests.labels(route, scope.get("method", ""), str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - start)
