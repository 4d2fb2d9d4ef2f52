"""Health, readiness, metrics, status and logs of running processes, as operators and probes see them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from PIL import Image

from shared.embedded_redis import free_port
from tests.fixtures.pipeline import Pipeline
from tests.fixtures.settings import TEST_TOKEN

pytestmark = pytest.mark.slow


def test_probes_metrics_status_and_json_logs(pipeline: Pipeline, tmp_path: Path) -> None:
    src = tmp_path / "p.jpg"
    Image.new("RGB", (300, 200), (10, 120, 200)).save(src)
    photo_id, path = pipeline.gallery.add_photo(src)
    router_port, worker_port = free_port(), free_port()
    pipeline.router(MINDSIGHT_METRICS_PORT=str(router_port))
    pipeline.worker("clip", MINDSIGHT_METRICS_PORT=str(worker_port), MINDSIGHT_LOG_FORMAT="json")
    pipeline.push_photo(photo_id, path)
    pipeline.wait_for(lambda: len(pipeline.gallery.ml_results(photo_id)) == 2, 90, "delivery")

    worker = f"http://127.0.0.1:{worker_port}"
    assert httpx.get(f"{worker}/healthz").status_code == 200
    ready = httpx.get(f"{worker}/readyz").json()
    assert ready["ready"] is True and ready["capabilities"] == ["clip"]
    assert ready["models"]["clip"]["tiny-hf"]["device"] == "cpu"
    metrics = httpx.get(f"{worker}/metrics").text
    assert 'mindsight_jobs_total{capability="clip",model="tiny-hf",outcome="done"} 1.0' in metrics
    assert 'mindsight_stage_seconds_count{capability="clip",stage="inference"} 1.0' in metrics
    assert 'mindsight_batch_size_count{capability="clip"} 1.0' in metrics
    router_metrics = httpx.get(f"http://127.0.0.1:{router_port}/metrics").text
    assert 'mindsight_routed_total{outcome="dispatched",source="photo_tasks"} 1.0' in router_metrics
    assert 'mindsight_queue_depth{queue="photo_tasks"}' in router_metrics

    probe = subprocess.run(
        [sys.executable, "-m", "mindsight", "healthcheck", "--port", str(worker_port)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert probe.returncode == 0, probe.stderr
    dead = subprocess.run(
        [sys.executable, "-m", "mindsight", "healthcheck", "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert dead.returncode == 1 and "unhealthy" in dead.stderr

    status = subprocess.run(
        [sys.executable, "-m", "mindsight", "--env-file", "/dev/null", "status", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env=pipeline.env(),
    )
    assert status.returncode == 0, status.stderr
    data = json.loads(status.stdout)
    assert [w["queues"] for w in data["workers"]] == [["clip", "clip_bulk"]]  # interactive lane first
    assert [r["alive"] for r in data["routers"]] == [True]
    assert {q["capability"]: q["queued"] for q in data["queues"]}["clip"] == 0
    assert data["dead_letters"] == {"photo_tasks_dlq": 0, "text_tasks_dlq": 0}

    worker_log = next(p for _, p in pipeline.procs if p.name.startswith("worker-clip")).read_text()
    records = [json.loads(line) for line in worker_log.splitlines() if line.startswith("{")]
    outcome = next(r for r in records if r.get("photo_ids") == [photo_id])
    assert outcome["delivered"] == 1 and outcome["seconds"] > 0 and outcome["level"] == "info"
    assert TEST_TOKEN not in pipeline.logs()
