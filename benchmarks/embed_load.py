"""Load on `/embed_text`: `mindsight serve embed-api` started for real, hit by httpx at concurrency 1 and 8.

Each concurrent client is a thread with its own keep-alive connection, as a gallery backend's worker pool
would hold. Latency is measured around each request in the client, so it includes HTTP and JSON.
"""

from __future__ import annotations

import statistics
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

import httpx

from benchmarks.processes import ProcessGroup, new_port, peak_rss_mb, wait_http_ok

SHORT_QUERY = "a cat on the beach"
LONG_QUERY = (
    "an old black and white photograph of a large family gathered around a long wooden table in a garden "
    "on a summer afternoon, children playing with a dog in the background near a red bicycle and a fountain"
)
"""41 tokens with start and end: the cost of a long query, against the short one's 7."""


@dataclass
class EmbedLoad:
    """Latency and throughput of one query shape at one concurrency."""

    query: str
    concurrency: int
    requests: int
    p50_ms: float
    p99_ms: float
    requests_per_s: float
    model_mean_ms: float | None = None
    """Mean model time per request, from the service's own embed_api_inference_seconds."""
    server_mean_ms: float | None = None
    """Mean time inside the service (request to last byte), from embed_api_request_duration_seconds."""


@dataclass
class EmbedApiRun:
    """One embed-api configuration under load."""

    variant: str
    env: dict[str, str]
    loads: list[EmbedLoad]
    peak_rss_mb: float
    runtime: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def _service_seconds(url: str) -> dict[str, float]:
    """Sums and counts of the service's model and request-duration histograms (/embed_text only)."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {}
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=5).text):
        if family.name not in ("embed_api_inference_seconds", "embed_api_request_duration_seconds"):
            continue
        for sample in family.samples:
            if sample.labels.get("route", "/embed_text") == "/embed_text" and sample.name.endswith(
                ("_sum", "_count")
            ):
                out[sample.name] = out.get(sample.name, 0.0) + sample.value
    return out


def _mean_ms(before: dict[str, float], after: dict[str, float], name: str) -> float | None:
    count = after.get(f"{name}_count", 0.0) - before.get(f"{name}_count", 0.0)
    total = after.get(f"{name}_sum", 0.0) - before.get(f"{name}_sum", 0.0)
    return round(1000 * total / count, 2) if count else None


def run_load(url: str, text: str, concurrency: int, requests: int) -> EmbedLoad:
    """`requests` POSTs of `text` spread over `concurrency` client threads."""
    before = _service_seconds(url)
    latencies: list[float] = []
    lock = threading.Lock()
    per_client = max(1, requests // concurrency)
    errors: list[str] = []

    def client() -> None:
        mine: list[float] = []
        with httpx.Client(base_url=url, timeout=30) as http:
            for _ in range(per_client):
                start = time.perf_counter()
                resp = http.post("/embed_text", json={"text": text})
                mine.append(time.perf_counter() - start)
                if resp.status_code != 200:
                    errors.append(f"{resp.status_code} {resp.text[:200]}")
                    return
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"/embed_text failed: {errors[0]}")
    after = _service_seconds(url)
    return EmbedLoad(
        query="short" if text == SHORT_QUERY else "long",
        concurrency=concurrency,
        requests=len(latencies),
        p50_ms=round(1000 * statistics.median(latencies), 2),
        p99_ms=round(1000 * _percentile(latencies, 0.99), 2),
        requests_per_s=round(len(latencies) / elapsed, 1),
        model_mean_ms=_mean_ms(before, after, "embed_api_inference_seconds"),
        server_mean_ms=_mean_ms(before, after, "embed_api_request_duration_seconds"),
    )


def bench_embed_api(group: ProcessGroup, variant: str, env: dict[str, str], requests: int) -> EmbedApiRun:
    """Start the embed API with `env`, warm it, measure short/long at c=1 and short at c=8, stop it."""
    port = new_port()
    proc = group.mindsight(
        f"embed-api-{variant}", "serve", "embed-api", "--host", "127.0.0.1", "--port", str(port), env=env
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http_ok(f"{url}/readyz", group, timeout=300)
        runtime = httpx.get(f"{url}/models", timeout=5).json()[0]
        run_load(url, SHORT_QUERY, 1, 20)  # warm-up: first requests pay allocator and thread-pool set-up
        loads = [
            run_load(url, SHORT_QUERY, 1, requests),
            run_load(url, LONG_QUERY, 1, max(20, requests // 4)),
            run_load(url, SHORT_QUERY, 8, requests),
        ]
        rss = round(peak_rss_mb(proc.pid), 1)
    finally:
        group.stop()
    keep = ("runtime", "device", "precision", "extra")
    return EmbedApiRun(variant, env, loads, rss, {k: runtime.get(k) for k in keep})
