"""docker-compose.yml and its GPU override, rendered by the real `docker compose config` (no engine needed).

The compose-spec schema (unknown keys, bad types, missing required variables) is compose's own check;
the tests here check what it cannot know: that commands exist, ports match, volumes and variables agree.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.models.store.locations import model_locations
from shared.settings import load_settings
from tests.deploy_support import dockerfile_stages as dfs
from tests.deploy_support.cli_paths import resolve
from tests.deploy_support.settings_catalog import REPO, example_lines, settings_env_vars
from tests.deploy_support.tools import CHECK_TOKEN, compose_config, compose_project, kustomize, tool

COMPOSE = REPO / "docker-compose.yml"
GPU = REPO / "deploy/docker-compose.gpu.yml"
CORE = {
    "redis",
    "models",
    "router",
    "worker-photo",
    "worker-text",
    "embed-api",
}
PROFILES = {"demo": {"gallery-dev", "enqueue-samples"}, "ops": {"rq-dashboard"}}
WORKERS = {"worker-photo", "worker-text"}
ONE_SHOTS = {"models", "enqueue-samples"}
GPU_SERVICES = {"worker-photo", "embed-api"}
VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compose_project(tmp_path_factory.mktemp("compose"))


@pytest.fixture(scope="module")
def services(project: Path) -> dict[str, Any]:
    """Every service, both profiles on, as compose renders them from .env.example (with a token set)."""
    rendered: dict[str, Any] = compose_config(project, "--profile", "demo", "--profile", "ops")["services"]
    return rendered


@pytest.fixture(scope="module")
def compose(project: Path) -> dict[str, Any]:
    return compose_config(project, "--profile", "demo", "--profile", "ops")


@pytest.fixture(scope="module")
def df() -> dfs.Dockerfile:
    return dfs.read(REPO / "deploy/docker/Dockerfile")


def entry_and_command(svc: dict[str, Any], df: dfs.Dockerfile) -> tuple[list[str], list[str]]:
    """The argv a service's container runs: its entrypoint (or the image's) and its command."""
    entry = svc.get("entrypoint")
    if entry is None and "build" in svc:
        instr = df.effective(svc["build"]["target"], "ENTRYPOINT")
        entry = instr.exec_form() if instr else None
    return list(entry or []), list(svc.get("command") or [])


def mounts(svc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Container path -> compose's long-syntax mount."""
    return {m["target"]: m for m in svc.get("volumes", [])}


def test_services_and_profiles(project: Path, services: dict[str, Any]) -> None:
    default = set(compose_config(project)["services"])
    assert default == CORE
    for profile, members in PROFILES.items():
        assert {n for n, s in services.items() if profile in s.get("profiles", [])} == members
    assert set(services) == CORE | set().union(*PROFILES.values())


def test_x_worker_anchor_keeps_workers_identical_but_for_their_command(services: dict[str, Any]) -> None:
    """Workers differ in command, deploy (replicas, memory), threads and the photo worker's longer start
    period."""
    assert "x-worker:" in COMPOSE.read_text() and "<<: *worker" in COMPOSE.read_text()
    assert sorted(services[w]["command"] for w in WORKERS) == [["worker", "photo"], ["worker", "text"]]

    def shape(svc: dict[str, Any]) -> dict[str, Any]:
        check = {k: v for k, v in svc["healthcheck"].items() if k != "start_period"}
        env = {
            k: v
            for k, v in svc["environment"].items()
            if k not in ("MINDSIGHT_THREADS", "MINDSIGHT_REPLICAS")
        }
        rest = {k: v for k, v in svc.items() if k not in ("command", "deploy")}
        return rest | {"healthcheck": check, "environment": env}

    shapes = [shape(services[w]) for w in sorted(WORKERS)]
    assert all(s == shapes[0] for s in shapes)
    # It loads every photo model, every replica at once: it gets longer than a one-model worker.
    start = {w: seconds(services[w]["healthcheck"]["start_period"]) for w in WORKERS}
    assert start["worker-photo"] > start["worker-text"], start


def seconds(duration: str) -> float:
    """A Go duration as compose renders it ("5m0s", "1h2m3.5s") in seconds."""
    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:([\d.]+)s)?", duration)
    assert parts and duration, duration
    h, m, s = (float(g or 0) for g in parts.groups())
    return h * 3600 + m * 60 + s


def example_value(name: str) -> str:
    """The value .env.example lists for a variable (the commented-out default of a compose-only one)."""
    (line,) = (line for line in example_lines() if line.name == name)
    return line.value


def test_photo_layout_is_two_variables_with_the_documented_defaults(
    project: Path, services: dict[str, Any], tmp_path: Path
) -> None:
    """Issue 10 item 4: replicas and threads of the photo workers are one variable each, defaulted once."""
    photo = services["worker-photo"]
    assert photo["deploy"]["replicas"] == int(example_value("MINDSIGHT_PHOTO_WORKERS"))
    assert photo["environment"]["MINDSIGHT_THREADS"] == example_value("MINDSIGHT_PHOTO_THREADS") == "auto"
    # auto shares the cores among the replicas: each replica knows how many there are
    assert photo["environment"]["MINDSIGHT_REPLICAS"] == example_value("MINDSIGHT_PHOTO_WORKERS")
    assert "replicas" not in services["worker-text"].get("deploy", {})
    # On a GPU one process by default (deploy/docker-compose.gpu.yml says why).
    assert compose_config(project, gpu=True)["services"]["worker-photo"]["deploy"]["replicas"] == 1
    env = (
        f"PROCESSING_INTERNAL_TOKEN={CHECK_TOKEN}\n"
        "MINDSIGHT_PHOTO_WORKERS=3\nMINDSIGHT_PHOTO_THREADS=2\nMINDSIGHT_THREADS=4\n"
    )
    custom = compose_project(tmp_path, env_text=env)
    for gpu in (False, True):
        rendered = compose_config(custom, gpu=gpu)["services"]
        assert rendered["worker-photo"]["deploy"]["replicas"] == 3
        assert rendered["worker-photo"]["environment"]["MINDSIGHT_THREADS"] == "2"
        assert rendered["worker-photo"]["environment"]["MINDSIGHT_REPLICAS"] == "3"
        assert rendered["worker-text"]["environment"]["MINDSIGHT_THREADS"] == "4"


@pytest.mark.parametrize(
    "name", sorted((CORE | {"gallery-dev", "enqueue-samples", "rq-dashboard"}) - {"redis"})
)
def test_commands_are_real_cli_commands(services: dict[str, Any], df: dfs.Dockerfile, name: str) -> None:
    svc = services[name]
    assert svc["build"]["target"] in {s.name for s in df.stages}
    entry, command = entry_and_command(svc, df)
    if entry == ["mindsight"]:
        resolve(command)
    else:
        assert (name, entry, svc["build"]["target"]) == ("rq-dashboard", ["rq-dashboard"], "dashboard")


def test_images_match_their_build_targets(project: Path, services: dict[str, Any]) -> None:
    for name, svc in services.items():
        if "build" not in svc:
            continue
        build = svc["build"]
        assert Path(build["context"]) == project and (REPO / build["dockerfile"]).is_file()
        assert svc["image"].endswith("-" + build["target"]), f"{name}: image tag and build target differ"


def test_redis_is_pinned_persistent_and_healthchecked(services: dict[str, Any]) -> None:
    redis = services["redis"]
    assert re.fullmatch(r"redis:7\.\d+\.\d+", redis["image"]) or "@sha256:" in redis["image"]
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert mounts(redis)["/data"]["type"] == "volume"
    assert redis["healthcheck"]["test"][1].startswith("redis-cli ping")


def test_every_service_has_restart_policy_and_a_healthcheck_that_exists_in_its_image(
    services: dict[str, Any],
) -> None:
    for name, svc in services.items():
        assert "restart" in svc, f"{name}: no restart policy"
        check = svc["healthcheck"]
        if name in ONE_SHOTS:
            assert svc["restart"] == "no" and check == {"disable": True}, (
                f"{name}: one-shots neither restart nor probe"
            )
            continue
        assert svc["restart"] == "unless-stopped"
        test = check["test"]
        if name == "redis":
            assert test[0] == "CMD-SHELL" and test[1].split()[0] == "redis-cli"
            continue
        assert test[0] == "CMD" and test[1] == "mindsight", f"{name}: probe with the mindsight CLI, no curl"
        resolve(test[2:])


def test_health_ports_match_what_each_process_serves(services: dict[str, Any]) -> None:
    for name in (*WORKERS, "router"):
        svc = services[name]
        assert svc["environment"]["MINDSIGHT_METRICS_PORT"] == "9100"
        assert svc["healthcheck"]["test"][-2:] == ["--port", "9100"]
    api = services["embed-api"]
    assert api["environment"]["EMBED_API_PORT"] == "8001"
    assert api["healthcheck"]["test"][-2:] == ["--port", "8001"]
    assert [p["target"] for p in api["ports"]] == [8001]
    gallery = services["gallery-dev"]
    port = gallery["command"][gallery["command"].index("--port") + 1]
    assert gallery["healthcheck"]["test"][-2:] == ["--port", port]


def test_depends_on_waits_for_health_and_for_the_models(services: dict[str, Any]) -> None:
    for name, svc in services.items():
        for dep, spec in svc.get("depends_on", {}).items():
            target = services[dep]
            cond = spec["condition"]
            if cond == "service_healthy":
                assert "test" in target["healthcheck"], f"{name} waits on {dep}, which has no healthcheck"
            else:
                assert cond == "service_completed_successfully" and dep in ONE_SHOTS
            if not svc.get("profiles"):
                assert not target.get("profiles"), f"{name} needs {dep}, which only a profile starts"
    for name in (*WORKERS, "embed-api"):
        assert services[name]["depends_on"]["models"]["condition"] == "service_completed_successfully"
    for name in (*WORKERS, "router"):
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"


def test_models_volume_and_read_only_uploads(services: dict[str, Any], compose: dict[str, Any]) -> None:
    assert "models" in compose["volumes"]
    assert not mounts(services["models"])["/models"].get("read_only", False)
    for name in (*WORKERS, "embed-api"):
        assert mounts(services[name])["/models"]["read_only"] is True
        assert mounts(services[name])["/models"]["source"] == "models"
        assert services[name]["environment"]["MINDSIGHT_MODELS_DIR"] == "/models"
    for name in WORKERS:
        svc = services[name]
        assert mounts(svc)["/gallery"]["read_only"] is True
        assert svc["environment"]["PROJECT_ROOT"] == "/gallery"
        assert svc["environment"]["UPLOAD_BASE_DIR"].startswith("/gallery")
    assert not mounts(services["gallery-dev"])["/gallery"].get("read_only", False)
    enqueue = services["enqueue-samples"]
    samples = mounts(enqueue)["/samples"]
    assert samples["type"] == "bind" and samples["read_only"] is True and "/samples" in enqueue["command"]


def test_env_file_and_required_secret(project: Path, services: dict[str, Any]) -> None:
    raw = yaml.safe_load(COMPOSE.read_text())["services"]
    for name, svc in services.items():
        if name in ("redis", "rq-dashboard"):
            assert "env_file" not in raw[name]
            assert "PROCESSING_INTERNAL_TOKEN" not in svc.get("environment", {})
            continue
        assert svc["environment"]["PROCESSING_INTERNAL_TOKEN"] == CHECK_TOKEN
    # Without the token, compose refuses to render (so `up` starts nothing).
    (project / "no-token").mkdir()
    bare = compose_project(project / "no-token", env_text="")
    proc = subprocess.run(
        [tool("docker-compose"), "config", "-q"],
        cwd=bare,
        env={"PATH": os.environ.get("PATH", "")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0 and "set PROCESSING_INTERNAL_TOKEN in .env" in proc.stderr


def test_variables_are_documented_and_required_ones_apply_without_profiles() -> None:
    documented = {line.name for line in example_lines()}
    for path in (COMPOSE, GPU):
        text = path.read_text()
        assert not re.search(r"\$(?!\{|\$)[A-Za-z_]", text), f"{path.name}: write ${{VAR}}, not $VAR"
        used = {m.group(1) for m in VAR.finditer(text)}
        assert used, path
        assert used <= documented, (
            f"{path.name} uses variables .env.example lacks: {sorted(used - documented)}"
        )
    required = {m.group(1) for m in VAR.finditer(COMPOSE.read_text()) if m.group(2) == ":?"}
    assert required == {"PROCESSING_INTERNAL_TOKEN"}


def test_published_ports_bind_loopback_by_default(services: dict[str, Any]) -> None:
    for name, svc in services.items():
        for port in svc.get("ports", []):
            assert port["host_ip"] == "127.0.0.1", f"{name}: {port}"
    raw = COMPOSE.read_text()
    assert raw.count("${MINDSIGHT_BIND_ADDRESS:-127.0.0.1}:") == sum(
        len(s.get("ports", [])) for s in services.values()
    )


def test_gpu_override(project: Path, services: dict[str, Any], df: dfs.Dockerfile) -> None:
    gpu = compose_config(project, gpu=True)["services"]
    changed = {name for name, svc in gpu.items() if svc != services[name]}
    assert changed == GPU_SERVICES | {"router"}
    # The router stays on the CPU image; on a GPU it only makes bigger jobs (the .env value loses).
    router = {**gpu["router"], "environment": dict(gpu["router"]["environment"])}
    assert router["environment"].pop("MINDSIGHT_BATCH_SIZE") == example_value("MINDSIGHT_GPU_BATCH_SIZE")
    cpu_router = {**services["router"], "environment": dict(services["router"]["environment"])}
    assert cpu_router["environment"].pop("MINDSIGHT_BATCH_SIZE") == example_value("MINDSIGHT_BATCH_SIZE")
    assert router == cpu_router
    for name in GPU_SERVICES:
        merged = gpu[name]
        assert merged["build"] == {**services[name]["build"], "target": "cuda"}
        assert merged["image"].endswith("-cuda")
        assert merged["environment"]["MINDSIGHT_DEVICE"] == "cuda"
        assert merged["environment"]["REDIS_URL"] == services[name]["environment"]["REDIS_URL"]
        (device,) = merged["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
        assert merged["deploy"]["resources"]["limits"] == services[name]["deploy"]["resources"]["limits"]
        resolve(entry_and_command(merged, df)[1])
    assert "cuda" in {s.name for s in df.stages}


def test_copied_example_gives_containers_the_in_stack_addresses(services: dict[str, Any]) -> None:
    """The example leaves both addresses unset, so containers get the `redis` service and the demo gallery."""
    for name, svc in services.items():
        env = svc.get("environment", {})
        if "PROCESSING_INTERNAL_TOKEN" in env:
            assert env["REDIS_URL"] == "redis://redis:6379/0", name
            expected = "http://gallery-dev:5800"
            assert env["API_BASE_URL"] == expected, name
    assert services["rq-dashboard"]["environment"]["RQ_DASHBOARD_REDIS_URL"] == "redis://redis:6379/0"


def test_addresses_set_in_env_file_win(tmp_path: Path) -> None:
    """Issue 9 item 2: a user's REDIS_URL and API_BASE_URL reach every container, the dashboard included."""
    env = (
        f"PROCESSING_INTERNAL_TOKEN={CHECK_TOKEN}\n"
        "REDIS_URL=redis://:pw@redis.lan:6380/2\n"
        "API_BASE_URL=http://gallery.lan:5800\n"
    )
    project = compose_project(tmp_path, env_text=env)
    for gpu in (False, True):
        rendered = compose_config(project, "--profile", "ops", gpu=gpu)["services"]
        for name, svc in rendered.items():
            environment = svc.get("environment", {})
            if name == "rq-dashboard":
                assert environment["RQ_DASHBOARD_REDIS_URL"] == "redis://:pw@redis.lan:6380/2"
            elif name != "redis":
                assert environment["REDIS_URL"] == "redis://:pw@redis.lan:6380/2", name
                assert environment["API_BASE_URL"] == "http://gallery.lan:5800", name
    demo = compose_config(project, "--profile", "demo")["services"]
    # The demo's uploader talks to the demo gallery whatever the workers use.
    assert demo["enqueue-samples"]["environment"]["API_BASE_URL"] == "http://gallery-dev:5800"


UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
DOC_ROW = re.compile(r"^\| ([\w-]+)(?: \((one-shot|compose|Kubernetes)\))? \| (\d+) (MiB|GiB) \|", re.M)


def k8s_bytes(quantity: str) -> int:
    return int(quantity[:-2]) * UNITS[quantity[-2:]]


def test_memory_limits_equal_the_k8s_limits_and_the_documented_table(services: dict[str, Any]) -> None:
    """Issue 9 item 9: compose gets the memory figures docs/deployment.md lists, the k8s limits too.

    Rows marked (compose) or (Kubernetes) exist in that deployment only: compose's worker-photo hosts what
    Kubernetes runs as worker-clip, worker-caption and worker-face.
    """
    rows = DOC_ROW.findall((REPO / "docs/deployment.md").read_text())
    documented = {name: int(n) * (2**20 if unit == "MiB" else 2**30) for name, _, n, unit in rows}
    only = {name: where for name, where, _, _ in rows if where in ("compose", "Kubernetes")}
    assert only == {
        "worker-photo": "compose",
        **{w: "Kubernetes" for w in ("worker-clip", "worker-caption", "worker-face")},
    }
    k8s = {}
    for res in kustomize(REPO / "deploy/k8s/base"):
        if res["kind"] in ("Deployment", "StatefulSet", "Job"):
            (container,) = res["spec"]["template"]["spec"]["containers"]
            name = {"models-download": "models"}.get(res["metadata"]["name"], res["metadata"]["name"])
            k8s[name] = k8s_bytes(container["resources"]["limits"]["memory"])
    compose = {
        name: int(svc["deploy"]["resources"]["limits"]["memory"])
        for name, svc in services.items()
        if not svc.get("profiles")
    }
    assert set(compose) == CORE
    assert compose == {n: b for n, b in documented.items() if only.get(n) != "Kubernetes"}
    assert k8s == {n: b for n, b in documented.items() if only.get(n) != "compose"}


def image_env(df: dfs.Dockerfile, target: str) -> dict[str, str]:
    """ENV of an image target (inherited stages included), as `KEY=value` pairs of BuildKit's parse."""
    env: dict[str, str] = {}
    for stage in reversed(df.lineage(target)):
        for instr in stage.all("ENV"):
            env.update(zip(instr.args[::2], instr.args[1::2], strict=True))
    return env


def image_home(df: dfs.Dockerfile, target: str) -> str:
    runs = " ".join(i.value for s in df.lineage(target) for i in s.all("RUN"))
    match = re.search(r"--home-dir (\S+)", runs)
    assert match, f"{target}: no app user home"
    return match.group(1)


@pytest.mark.parametrize("name", sorted(WORKERS | {"embed-api", "models"}))
def test_every_model_resolves_inside_the_one_models_volume(
    services: dict[str, Any], df: dfs.Dockerfile, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CLIP, BLIP, the face pack, the ONNX exports and the hub cache all live on the `models` volume.

    Rendered by the real compose, with the image's ENV and the app user's HOME, through the production
    download plan: a model outside the volume is downloaded by the `models` one-shot and never found.
    """
    svc = services[name]
    env = {**image_env(df, svc["build"]["target"]), **svc["environment"], "HOME": image_home(df, "full")}
    for var in settings_env_vars():
        monkeypatch.delenv(var, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    locations = model_locations(load_settings(None))
    volume = mounts(svc)["/models"]
    assert volume["source"] == "models" and volume["type"] == "volume"
    inside = locations.inside(Path("/models"))
    assert set(inside) >= {"caption", "face"} and any(k.startswith("clip:") for k in inside)
    assert all(inside.values()), f"{name}: outside the models volume: {inside}"
    assert locations.onnx.is_relative_to("/models"), "the ONNX exports"
    assert locations.caption_int8.is_relative_to("/models"), "BLIP's int8 file"
    assert Path(env["HF_HOME"]).is_relative_to("/models"), "open_clip Name/tag weights (HF_HOME)"
