"""docker-compose.yml and its GPU override, checked statically (no Docker engine needed)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy_support import dockerfile
from tests.deploy_support.cli_paths import resolve
from tests.deploy_support.settings_catalog import REPO, example_lines

COMPOSE = REPO / "docker-compose.yml"
GPU = REPO / "deploy/docker-compose.gpu.yml"
CORE = {
    "redis",
    "models",
    "router",
    "worker-clip",
    "worker-caption",
    "worker-face",
    "worker-text",
    "embed-api",
}
PROFILES = {"demo": {"gallery-dev", "enqueue-samples"}, "ops": {"rq-dashboard"}}
WORKERS = {"worker-clip", "worker-caption", "worker-face", "worker-text"}
ONE_SHOTS = {"models", "enqueue-samples"}
GPU_SERVICES = {"worker-clip", "worker-caption", "worker-face", "embed-api"}
SERVICE_KEYS = frozenset(
    {
        "image",
        "build",
        "command",
        "entrypoint",
        "environment",
        "env_file",
        "volumes",
        "ports",
        "depends_on",
        "healthcheck",
        "restart",
        "profiles",
        "init",
        "extra_hosts",
        "stop_grace_period",
        "deploy",
    }
)
"""Compose-spec service keys this project uses; a typo (`healtcheck`) would otherwise be ignored silently."""
VOLUME = re.compile(r"(\$\{[^}]*\}|[^:]+):([^:]+)(?::(ro|rw))?")
VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}")


def load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict) and isinstance(data.get("services"), dict), f"{path} has no services"
    return data


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load(COMPOSE)


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


@pytest.fixture(scope="module")
def df() -> dockerfile.Dockerfile:
    return dockerfile.read(REPO / "deploy/docker/Dockerfile")


def entry_and_command(svc: dict[str, Any], df: dockerfile.Dockerfile) -> tuple[list[str], list[str]]:
    """The argv a service's container runs: its entrypoint (or the image's) and its command."""
    entry = svc.get("entrypoint")
    if entry is None and "build" in svc:
        instr = df.effective(svc["build"]["target"], "ENTRYPOINT")
        entry = instr.exec_form() if instr else None
    command = svc.get("command", [])
    assert isinstance(command, list), "use the exec (list) form for commands"
    return list(entry or []), command


def test_services_and_profiles(services: dict[str, Any]) -> None:
    default = {name for name, svc in services.items() if not svc.get("profiles")}
    assert default == CORE
    for profile, members in PROFILES.items():
        assert {n for n, s in services.items() if profile in s.get("profiles", [])} == members
    assert set(services) == CORE | set().union(*PROFILES.values())
    for name, svc in services.items():
        unknown = set(svc) - SERVICE_KEYS
        assert not unknown, f"{name}: unknown keys {unknown}"


def test_x_worker_anchor_keeps_workers_identical_but_for_their_command(services: dict[str, Any]) -> None:
    assert "x-worker:" in COMPOSE.read_text() and "<<: *worker" in COMPOSE.read_text()
    shapes = [{k: v for k, v in services[w].items() if k != "command"} for w in sorted(WORKERS)]
    assert all(shape == shapes[0] for shape in shapes)
    assert sorted(services[w]["command"] for w in WORKERS) == [
        ["worker", c] for c in sorted(("caption", "clip", "face", "text"))
    ]


@pytest.mark.parametrize(
    "name", sorted((CORE | {"gallery-dev", "enqueue-samples", "rq-dashboard"}) - {"redis"})
)
def test_commands_are_real_cli_commands(
    services: dict[str, Any], df: dockerfile.Dockerfile, name: str
) -> None:
    svc = services[name]
    assert svc["build"]["target"] in {s.name for s in df.stages}
    entry, command = entry_and_command(svc, df)
    if entry == ["mindsight"]:
        resolve(command)
    else:
        assert (name, entry, svc["build"]["target"]) == ("rq-dashboard", ["rq-dashboard"], "dashboard")


def test_images_match_their_build_targets(services: dict[str, Any]) -> None:
    for name, svc in services.items():
        if "build" not in svc:
            continue
        build = svc["build"]
        assert build["context"] == "." and (REPO / build["dockerfile"]).is_file()
        assert svc["image"].endswith("-" + build["target"]), f"{name}: image tag and build target differ"


def test_redis_is_pinned_persistent_and_healthchecked(services: dict[str, Any]) -> None:
    redis = services["redis"]
    assert re.fullmatch(r"redis:7\.\d+\.\d+", redis["image"]) or "@sha256:" in redis["image"]
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert any(v.split(":")[1] == "/data" for v in redis["volumes"])
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
    assert any(p.endswith(":8001") for p in api["ports"])
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
    def mounts(svc: dict[str, Any]) -> dict[str, str]:
        """Container path -> ro/rw, from short-syntax volumes whose source may be ${VAR:-default}."""
        out = {}
        for volume in svc.get("volumes", []):
            m = VOLUME.fullmatch(volume)
            assert m, f"unreadable volume {volume!r}"
            out[m.group(2)] = m.group(3) or "rw"
        return out

    assert "models" in compose["volumes"]
    assert mounts(services["models"])["/models"] == "rw"
    for name in (*WORKERS, "embed-api"):
        assert mounts(services[name])["/models"] == "ro"
        assert services[name]["environment"]["MINDSIGHT_MODELS_DIR"] == "/models"
    for name in WORKERS:
        svc = services[name]
        assert mounts(svc)["/gallery"] == "ro"
        assert svc["environment"]["PROJECT_ROOT"] == "/gallery"
        assert svc["environment"]["UPLOAD_BASE_DIR"].startswith("/gallery")
    assert mounts(services["gallery-dev"])["/gallery"] == "rw"
    enqueue = services["enqueue-samples"]
    assert "./samples:/samples:ro" in enqueue["volumes"] and "/samples" in enqueue["command"]


def test_env_file_and_required_secret(services: dict[str, Any]) -> None:
    for name, svc in services.items():
        if name in ("redis", "rq-dashboard"):
            assert "env_file" not in svc, f"{name} needs none of the settings (or secrets)"
            continue
        assert svc["env_file"] == ".env"
        token = svc["environment"]["PROCESSING_INTERNAL_TOKEN"]
        assert token.startswith("${PROCESSING_INTERNAL_TOKEN:?"), f"{name}: the token must be required"


def test_variables_are_documented_and_required_ones_apply_without_profiles(services: dict[str, Any]) -> None:
    documented = {line.name for line in example_lines()}
    for path in (COMPOSE, GPU):
        text = path.read_text()
        assert not re.search(r"\$(?!\{|\$)[A-Za-z_]", text), f"{path.name}: write ${{VAR}}, not $VAR"
        used = {m.group(1) for m in VAR.finditer(text)}
        assert used, path
        assert used <= documented, (
            f"{path.name} uses variables .env.example lacks: {sorted(used - documented)}"
        )
    # Compose interpolates every service before picking profiles: a variable required (`:?`) only by a
    # profile's service would break a plain `docker compose up`.
    default_text = yaml.safe_dump({n: s for n, s in services.items() if not s.get("profiles")})
    required = {m.group(1) for m in VAR.finditer(COMPOSE.read_text()) if m.group(2) == ":?"}
    assert required == {"PROCESSING_INTERNAL_TOKEN"}
    for name in required:
        assert "${" + name + ":?" in default_text


def test_published_ports_bind_loopback_by_default(services: dict[str, Any]) -> None:
    for name, svc in services.items():
        for port in svc.get("ports", []):
            assert port.startswith("${MINDSIGHT_BIND_ADDRESS:-127.0.0.1}:"), f"{name}: {port}"


def merge_override(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Compose's override merge for the keys the GPU file uses: mappings merge, the rest replaces."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_override(out[key], value)
        else:
            out[key] = value
    return out


def test_gpu_override(services: dict[str, Any], df: dockerfile.Dockerfile) -> None:
    gpu = load(GPU)["services"]
    assert set(gpu) == GPU_SERVICES
    for name, svc in gpu.items():
        merged = merge_override(services[name], svc)
        assert merged["build"] == {**services[name]["build"], "target": "cuda"}
        assert merged["image"].endswith("-cuda")
        assert merged["environment"]["MINDSIGHT_DEVICE"] == "cuda"
        assert merged["environment"]["REDIS_URL"] == services[name]["environment"]["REDIS_URL"]
        (device,) = merged["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
        resolve(entry_and_command(merged, df)[1])
    assert "cuda" in {s.name for s in df.stages}


def docker_compose_works() -> bool:
    if shutil.which("docker") is None:
        return False
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, timeout=30)
    return probe.returncode == 0


@pytest.mark.skipif(not docker_compose_works(), reason="the docker compose plugin is not installed")
def test_docker_compose_config_accepts_both_files(tmp_path: Path) -> None:
    """The real compose parser (needs no daemon) validates the files against the compose spec."""
    (tmp_path / "deploy").mkdir()
    shutil.copy(COMPOSE, tmp_path / "docker-compose.yml")
    shutil.copy(GPU, tmp_path / "deploy/docker-compose.gpu.yml")
    (tmp_path / ".env").write_text(
        (REPO / ".env.example")
        .read_text()
        .replace("PROCESSING_INTERNAL_TOKEN=\n", "PROCESSING_INTERNAL_TOKEN=compose-config-check-token\n")
    )
    for files in (
        ["-f", "docker-compose.yml"],
        ["-f", "docker-compose.yml", "-f", "deploy/docker-compose.gpu.yml"],
    ):
        run = subprocess.run(
            ["docker", "compose", *files, "--profile", "demo", "--profile", "ops", "config", "-q"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.returncode == 0, run.stderr
