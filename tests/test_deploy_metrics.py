"""Every metric a mindsight process serves is `mindsight_*`, with build and model info (issue 9 item 7)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
import yaml
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from services.embed_api.app import create_app
from shared.metrics import model_info_gauge, record_models, serve_health
from shared.settings import EmbedApiSettings
from tests.deploy_support.settings_catalog import REPO
from tests.deploy_support.tools import compose_config, compose_project, kustomize
from workers.tasks.clip_task import ClipTask

if TYPE_CHECKING:
    from shared.models.clip.registry import ClipModel

STANDARD = ("process_", "python_")
"""prometheus_client's own collectors: standard names every Prometheus user knows, kept as they are."""


def families(text: str) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    return {
        f.name: [(s.name, s.labels, s.value) for s in f.samples] for f in text_string_to_metric_families(text)
    }


def ours(text: str) -> set[str]:
    return {name for name in families(text) if not name.startswith(STANDARD)}


@pytest.fixture
def health_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = serve_health(port, lambda: (True, {}), host="127.0.0.1")
    assert server is not None
    yield port
    server.shutdown()
    server.server_close()


def test_router_and_worker_metrics_are_prefixed_and_carry_build_info(health_port: int) -> None:
    text = httpx.get(f"http://127.0.0.1:{health_port}/metrics", timeout=10).text
    names = ours(text)
    assert names and all(n.startswith("mindsight_") for n in names), sorted(names)
    ((_, labels, value),) = families(text)["mindsight_build_info"]
    assert value == 1 and labels["version"] and labels["python"].count(".") == 2


def test_model_info_names_runtime_precision_and_device(tiny_clip_models: dict[str, ClipModel]) -> None:
    registry = CollectorRegistry()
    gauge = model_info_gauge(registry)
    record_models("clip", ClipTask(tiny_clip_models).describe(), gauge)
    series = {s.labels["model"]: s.labels for family in registry.collect() for s in family.samples}
    assert set(series) == set(tiny_clip_models)
    for label, model in tiny_clip_models.items():
        info = model.runtime_info
        assert series[label] == {
            "capability": "clip",
            "model": label,
            "runtime": info.runtime,
            "precision": info.precision,
            "device": info.device,
        }


def test_embed_api_metrics_are_prefixed_with_build_and_model_info(
    tiny_clip_models: dict[str, ClipModel],
) -> None:
    app = create_app(tiny_clip_models, "tiny-hf", EmbedApiSettings(_env_file=None))
    with TestClient(app) as client:
        client.post("/embed_text", json={"text": "a cat"}).raise_for_status()
        text = client.get("/metrics").text
    names = ours(text)
    assert "mindsight_embed_api_requests" in names
    assert all(n.startswith("mindsight_") for n in names), sorted(names)
    assert families(text)["mindsight_build_info"][0][1]["version"]
    models = {labels["model"]: labels for _, labels, _ in families(text)["mindsight_model_info"]}
    assert set(models) == set(tiny_clip_models)
    assert {m["capability"] for m in models.values()} == {"text"}
    assert models["tiny-hf"]["runtime"] == tiny_clip_models["tiny-hf"].runtime_info.runtime


def test_compose_scrape_config_lists_every_process_that_serves_metrics(tmp_path: Path) -> None:
    """Metrics are on by default in compose, and deploy/prometheus/compose.yml scrapes each of them."""
    services = compose_config(compose_project(tmp_path))["services"]
    serving = {}
    for name, svc in services.items():
        env = svc.get("environment") or {}
        if svc.get("command", [None])[0] in ("worker", "router"):
            serving[name] = int(env["MINDSIGHT_METRICS_PORT"])
        elif svc.get("command", [None])[:2] == ["serve", "embed-api"]:
            serving[name] = int(env["EMBED_API_PORT"])
    assert set(serving) == {"router", "worker-photo", "worker-text", "embed-api"}
    assert all(serving.values()), "a port of 0 turns metrics off"
    scrape = yaml.safe_load((REPO / "deploy/prometheus/compose.yml").read_text())
    (job,) = scrape["scrape_configs"]
    # DNS discovery: Docker answers a service name with every replica's address, so each one is scraped.
    assert "static_configs" not in job
    targets = set()
    for sd in job["dns_sd_configs"]:
        assert sd["type"] == "A"
        targets |= {(name, sd["port"]) for name in sd["names"]}
    assert sorted(targets) == sorted(serving.items())
    assert {"source_labels": ["__meta_dns_name"], "target_label": "service"} in job["relabel_configs"]


def test_every_k8s_pod_is_annotated_for_the_documented_scrape_config() -> None:
    scrape = yaml.safe_load((REPO / "deploy/prometheus/kubernetes.yml").read_text())
    (job,) = scrape["scrape_configs"]
    assert job["kubernetes_sd_configs"][0]["namespaces"]["names"] == ["mindsight"]
    for res in kustomize(REPO / "deploy/k8s/base"):
        if res["kind"] != "Deployment":
            continue
        template = res["spec"]["template"]
        notes = template["metadata"]["annotations"]
        assert notes["prometheus.io/scrape"] == "true" and notes["prometheus.io/path"] == "/metrics"
        (container,) = template["spec"]["containers"]
        ports = {p["containerPort"] for p in container["ports"]}
        assert int(notes["prometheus.io/port"]) in ports, res["metadata"]["name"]
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        assert env.get("MINDSIGHT_METRICS_PORT", "9100") != "0"
