"""deploy/k8s: the kustomize base and GPU overlay, built by `kubectl kustomize` and validated against schemas.

Core kinds go through kubernetes-validate; ScaledObjects through KEDA's own CRD schema, vendored under
tests/schemas/. What no schema knows (targets exist, triggers point at our Redis and queues) is checked here.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import redis
import yaml
from rq import Queue

from shared.device import auto_threads
from shared.settings import PLACEHOLDER_TOKENS, WorkerSettings
from tests.deploy_support import dockerfile_stages as dfs
from tests.deploy_support.cli_paths import resolve
from tests.deploy_support.settings_catalog import REPO, settings_env_vars
from tests.deploy_support.tools import kustomize

BASE = REPO / "deploy/k8s/base"
GPU = REPO / "deploy/k8s/overlays/gpu"
RWX = REPO / "deploy/k8s/overlays/rwx"
K8S_VERSIONS = ("1.29", "1.37")
"""Oldest and newest Kubernetes minor versions the manifests are validated against."""
WORKERS = {"worker-clip": "clip", "worker-caption": "caption", "worker-face": "face", "worker-text": "text"}
SCALE_TO_ZERO = {"worker-clip", "worker-caption", "worker-face"}
GPU_DEPLOYMENTS = {"worker-clip", "worker-caption", "worker-face", "embed-api"}

KEDA_CRD = REPO / "tests/schemas/keda.sh_scaledobjects.yaml"

Resource = dict[str, Any]


@cache
def build(root: Path) -> list[Resource]:
    return kustomize(root)


def closed(schema: Any) -> Any:
    """The CRD schema with unknown fields refused, as `kubectl apply` (strict field validation) does."""
    if isinstance(schema, list):
        return [closed(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: closed(v) for k, v in schema.items()}
    preserve = schema.get("x-kubernetes-preserve-unknown-fields")
    if "properties" in schema and "additionalProperties" not in schema and not preserve:
        out["additionalProperties"] = False
    return out


@cache
def keda_validator() -> jsonschema.protocols.Validator:
    crd = yaml.safe_load(KEDA_CRD.read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    schema = closed(version["schema"]["openAPIV3Schema"])
    # metadata is the API server's business (ObjectMeta), not the CRD's.
    schema["properties"]["metadata"] = {"type": "object"}
    validator_class = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
    return validator_class(schema)


@pytest.fixture(scope="module")
def base() -> list[Resource]:
    return build(BASE)


@pytest.fixture(scope="module")
def gpu() -> list[Resource]:
    return build(GPU)


def by_kind(resources: list[Resource], kind: str) -> dict[str, Resource]:
    return {r["metadata"]["name"]: r for r in resources if r["kind"] == kind}


def pod_spec(res: Resource) -> dict[str, Any]:
    return res["spec"]["template"]["spec"]


def main_container(res: Resource) -> dict[str, Any]:
    (container,) = pod_spec(res)["containers"]
    return container


def config(resources: list[Resource]) -> dict[str, str]:
    (cm,) = by_kind(resources, "ConfigMap").values()
    return cm["data"]


@pytest.mark.parametrize("root", [BASE, GPU, RWX], ids=["base", "gpu", "rwx"])
def test_every_resource_validates_against_kubernetes_schemas(root: Path) -> None:
    resources = build(root)
    assert len(resources) > 10
    for res in resources:
        if res["apiVersion"].startswith("keda.sh/"):
            errors = sorted(keda_validator().iter_errors(res), key=lambda e: list(e.path))
            assert not errors, f"{res['metadata']['name']}: " + "; ".join(
                f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors
            )
            continue
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(res, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                path = ".".join(str(p) for p in exc.path)
                pytest.fail(f"{res['kind']}/{res['metadata']['name']} (k8s {version}) {path}: {exc.message}")


def test_keda_schema_refuses_what_keda_would() -> None:
    """The vendored CRD schema is live: a typo'd field and a wrong type are both refused."""
    (scaled,) = [r for r in build(BASE) if r["kind"] == "ScaledObject"][:1]
    typo = {**scaled, "spec": {**scaled["spec"], "minReplicas": 0}}
    wrong = {**scaled, "spec": {**scaled["spec"], "maxReplicaCount": "ten"}}
    assert keda_validator().is_valid(scaled)
    assert not keda_validator().is_valid(typo) and not keda_validator().is_valid(wrong)


def test_secret_template_is_valid_placeholder_and_never_applied() -> None:
    (secret,) = [d for d in yaml.safe_load_all((BASE / "secret.example.yaml").read_text()) if d]
    for version in K8S_VERSIONS:
        kubernetes_validate.validate(secret, version, strict=True)
    secrets = {name for name, var in settings_env_vars().items() if var.secret}
    assert set(secret["stringData"]) <= secrets
    # Forgetting to replace it is refused at start-up, not silently used.
    assert secret["stringData"]["PROCESSING_INTERNAL_TOKEN"] in PLACEHOLDER_TOKENS
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    assert "secret.example.yaml" not in kustomization["resources"]


def test_config_map_holds_only_known_non_secret_settings(base: list[Resource]) -> None:
    env = settings_env_vars()
    data = config(base)
    unknown = set(data) - set(env)
    assert not unknown, f"config.env sets variables nothing reads: {unknown}"
    assert not [k for k in data if env[k].secret], "secrets belong in the Secret, not the ConfigMap"
    assert data["MINDSIGHT_METRICS_PORT"] == "9100" and data["MINDSIGHT_MODELS_DIR"] == "/models"


def test_threads_follow_each_pods_cpu_limit(base: list[Resource], tmp_path: Path) -> None:
    """MINDSIGHT_THREADS=auto: a pod's threads are its CPU limit (cgroup v2 quota), never a second number."""
    assert config(base)["MINDSIGHT_THREADS"] == "auto"
    limits = {
        name: main_container(res)["resources"]["limits"]["cpu"]
        for name, res in by_kind(base, "Deployment").items()
    }
    for name, limit in limits.items():
        millicores = int(limit[:-1]) if str(limit).endswith("m") else int(float(limit) * 1000)
        cpu_max = tmp_path / f"{name}.cpu.max"
        cpu_max.write_text(f"{millicores * 100} 100000\n")  # what the kubelet writes for that limit
        expected = min(len(os.sched_getaffinity(0)), max(1, -(-millicores // 1000)))
        assert auto_threads(1, cpu_max) == expected, name


def test_containers_run_real_commands_with_probes_resources_and_secrets(base: list[Resource]) -> None:
    df = dfs.read(REPO / "deploy/docker/Dockerfile")
    uid = int(df.effective("full", "USER").value.split(":")[0])  # type: ignore[union-attr]
    metrics_port = int(config(base)["MINDSIGHT_METRICS_PORT"])
    workloads = {**by_kind(base, "Deployment"), **by_kind(base, "Job")}
    assert set(WORKERS) | {"router", "embed-api", "models-download"} == set(workloads)
    for name, res in workloads.items():
        container = main_container(res)
        assert container["image"].startswith("mindsight-ml:0.1.0-")
        resolve(container["args"])
        assert pod_spec(res)["securityContext"]["runAsUser"] == uid, f"{name}: uid differs from the image's"
        refs = [next(iter(ref.values()))["name"] for ref in container["envFrom"]]
        assert refs[0].startswith("mindsight-config-"), "the generated (hashed) ConfigMap name"
        if name != "models-download":
            assert "mindsight-secrets" in refs
        resources = container["resources"]
        assert set(resources) == {"requests", "limits"} and set(resources["requests"]) == {"cpu", "memory"}
        if res["kind"] == "Job":
            continue
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        probes = {kind: container[f"{kind}Probe"]["httpGet"] for kind in ("liveness", "readiness")}
        assert probes["liveness"]["path"] == "/healthz" and probes["readiness"]["path"] == "/readyz"
        expected = 8001 if name == "embed-api" else metrics_port
        for probe in probes.values():
            assert ports[probe["port"]] == expected, f"{name}: probes a port the process does not serve"


def test_pods_meet_the_restricted_pod_security_standard(base: list[Resource]) -> None:
    (ns,) = by_kind(base, "Namespace").values()
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    workloads = [r for r in base if r["kind"] in ("Deployment", "StatefulSet", "Job")]
    for res in workloads:
        pod = pod_spec(res)
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        assert pod["automountServiceAccountToken"] is False
        for container in pod["containers"]:
            ctx = container["securityContext"]
            assert ctx["allowPrivilegeEscalation"] is False and ctx["capabilities"]["drop"] == ["ALL"]
            assert ctx["readOnlyRootFilesystem"] is True


def test_models_volume_is_written_by_the_job_and_read_only_elsewhere(base: list[Resource]) -> None:
    pvcs = by_kind(base, "PersistentVolumeClaim")
    assert {"mindsight-models", "gallery-uploads"} <= set(pvcs)
    job = by_kind(base, "Job")["models-download"]
    job_env = {e["name"]: e["value"] for e in main_container(job)["env"]}
    assert job_env["MINDSIGHT_OFFLINE"] == "0" and config(base)["MINDSIGHT_OFFLINE"] == "1"
    assert {m["mountPath"]: m.get("readOnly", False) for m in main_container(job)["volumeMounts"]}[
        "/models"
    ] is False
    for name, res in by_kind(base, "Deployment").items():
        mounts = {m["mountPath"]: m.get("readOnly", False) for m in main_container(res)["volumeMounts"]}
        if name in WORKERS or name == "embed-api":
            assert mounts["/models"] is True
        if name in WORKERS:
            assert mounts["/gallery"] is True and config(base)["PROJECT_ROOT"] == "/gallery"


def test_redis_is_persistent_and_where_redis_url_points(base: list[Resource]) -> None:
    redis_set = by_kind(base, "StatefulSet")["redis"]
    args = main_container(redis_set)["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    assert redis_set["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    service = by_kind(base, "Service")["redis"]
    port = service["spec"]["ports"][0]["port"]
    assert config(base)["REDIS_URL"] == f"redis://redis:{port}/0"


def check_scaled_object(obj: Resource, resources: list[Resource]) -> None:
    """What KEDA's schema cannot know: the target exists, bounds are sane, redis triggers reach our Redis."""
    assert obj["apiVersion"] == "keda.sh/v1alpha1" and obj["kind"] == "ScaledObject"
    spec = obj["spec"]
    target = spec["scaleTargetRef"]["name"]
    deployment = by_kind(resources, "Deployment").get(target)
    assert deployment is not None, f"{obj['metadata']['name']}: scales missing Deployment {target}"
    assert "replicas" not in deployment["spec"], f"{target}: a fixed replicas count fights KEDA"
    lo, hi = spec["minReplicaCount"], spec["maxReplicaCount"]
    assert isinstance(lo, int) and isinstance(hi, int) and 0 <= lo <= hi and hi >= 1
    namespace = obj["metadata"]["namespace"]
    redis_port = by_kind(resources, "Service")["redis"]["spec"]["ports"][0]["port"]
    assert spec["triggers"]
    for trigger in spec["triggers"]:
        assert trigger["type"] == "redis"
        meta = trigger["metadata"]
        assert all(isinstance(v, str) for v in meta.values()), "KEDA trigger metadata values are strings"
        assert {"address", "listName", "listLength"} <= set(meta)
        assert meta["address"] == f"redis.{namespace}.svc.cluster.local:{redis_port}"
        assert int(meta["listLength"]) > 0 and int(meta.get("activationListLength", "0")) >= 0


@pytest.mark.parametrize("root", [BASE, GPU], ids=["base", "gpu"])
def test_scaled_objects(root: Path) -> None:
    resources = build(root)
    scaled = by_kind(resources, "ScaledObject")
    assert set(scaled) == set(WORKERS) | {"router"}
    for obj in scaled.values():
        check_scaled_object(obj, resources)


def test_workers_scale_on_their_rq_queue_and_router_on_the_backend_lists(base: list[Resource]) -> None:
    scaled = by_kind(base, "ScaledObject")
    conn = redis.Redis()  # never connected: Queue only needs it to exist to name its key
    worker_defaults = WorkerSettings.model_fields
    for name, queue in WORKERS.items():
        spec = scaled[name]["spec"]
        lanes = [queue] if queue == "text" else [queue, f"{queue}_bulk"]  # shared.lanes
        assert [t["metadata"]["listName"] for t in spec["triggers"]] == [
            Queue(q, connection=conn).key for q in lanes
        ]
        assert resolve(main_container(by_kind(base, "Deployment")[name])["args"]).name == queue
        if name in SCALE_TO_ZERO:
            assert spec["minReplicaCount"] == 0
            # A worker must outlive its longest job plus the longest retry wait before going to zero.
            timeout = worker_defaults["job_timeout_s"].default
            backoff = max(int(s) for s in worker_defaults["retry_backoff_s"].default.split(","))
            assert spec["cooldownPeriod"] > timeout + backoff
        else:
            assert spec["minReplicaCount"] == 1
    router = scaled["router"]["spec"]
    # Never zero: the router also runs RQ's scheduler, which brings due retries back to the queues.
    assert router["minReplicaCount"] == 1
    lists = [t["metadata"]["listName"] for t in router["triggers"]]
    assert lists == [
        config(base)["REDIS_QUEUE_NAME"],
        config(base)["REDIS_BULK_QUEUE_NAME"],
        config(base)["TEXT_EMBED_QUEUE_NAME"],
    ]


def test_gpu_overlay_changes_only_the_gpu_deployments(base: list[Resource], gpu: list[Resource]) -> None:
    before, after = by_kind(base, "Deployment"), by_kind(gpu, "Deployment")
    assert set(before) == set(after)
    for name, res in after.items():
        if name not in GPU_DEPLOYMENTS:
            assert res == before[name]
            continue
        pod, container = pod_spec(res), main_container(res)
        assert container["image"] == "mindsight-ml:0.1.0-cuda"
        assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert (
            container["resources"]["limits"]["memory"]
            == main_container(before[name])["resources"]["limits"]["memory"]
        )
        assert {"name": "MINDSIGHT_DEVICE", "value": "cuda"} in container["env"]
        assert pod["nodeSelector"] and any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
        assert container["args"] == main_container(before[name])["args"]
    others = [r for r in gpu if r["kind"] != "Deployment"]
    assert others == [r for r in base if r["kind"] != "Deployment"]


def test_claims_default_to_what_a_single_node_offers_and_rwx_is_one_component(base: list[Resource]) -> None:
    """Issue 9 item 9: k3s' local-path (one node) offers ReadWriteOnce only; the rwx overlay switches."""
    claims = by_kind(base, "PersistentVolumeClaim")
    assert {name: c["spec"]["accessModes"] for name, c in claims.items()} == {
        "mindsight-models": ["ReadWriteOnce"],
        "gallery-uploads": ["ReadWriteOnce"],
    }
    rwx = build(RWX)
    for res in rwx:
        before = next(
            r for r in base if (r["kind"], r["metadata"]["name"]) == (res["kind"], res["metadata"]["name"])
        )
        if res["kind"] == "PersistentVolumeClaim":
            assert res["spec"]["accessModes"] == ["ReadWriteMany"]
            assert {**res["spec"], "accessModes": None} == {**before["spec"], "accessModes": None}
        else:
            assert res == before
    assert len(rwx) == len(base)
