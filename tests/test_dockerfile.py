"""deploy/docker/Dockerfile: hadolint, then BuildKit's parser for targets, build context and run-time user."""

from __future__ import annotations

import re
import tomllib
from typing import Any

import click
import pytest

from tests.deploy_support import dockerfile_stages as dfs
from tests.deploy_support.cli_paths import resolve
from tests.deploy_support.dockerignore import DockerIgnore
from tests.deploy_support.settings_catalog import REPO
from tests.deploy_support.tools import hadolint

DOCKERFILE = REPO / "deploy/docker/Dockerfile"
PRODUCT_TARGETS = ("slim", "full", "cuda")
FINAL_TARGETS = (*PRODUCT_TARGETS, "dashboard")
BUILD_TOOLS = re.compile(r"\b(build-essential|gcc|g\+\+|make|cmake|python3-dev|libpython3[\d.]*-dev)\b")
PINNED = re.compile(r"^[\w./-]+:\d+\.\d+\.\d+[\w.-]*$")
"""An image reference with a full version tag (never `latest`, never a bare major)."""


@pytest.fixture(scope="module")
def df() -> dfs.Dockerfile:
    return dfs.read(DOCKERFILE)


@pytest.fixture(scope="module")
def pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_targets_exist_and_full_is_the_default(df: dfs.Dockerfile) -> None:
    names = [s.name for s in df.stages]
    assert set(FINAL_TARGETS) | {"builder"} <= set(names)
    assert len(names) == len(set(names)), "stage names must be unique"
    # `docker build` without --target builds the last stage.
    assert names[-1] == "full"


def test_buildkit_syntax_directive_comes_first() -> None:
    first = DOCKERFILE.read_text().splitlines()[0]
    assert re.fullmatch(r"# syntax=docker/dockerfile:1(\.\d+)?", first), (
        "RUN --mount needs the BuildKit syntax"
    )


def test_external_base_images_are_pinned(df: dfs.Dockerfile) -> None:
    names = {s.name for s in df.stages}
    for stage in df.stages:
        if stage.base in names:
            continue
        image = df.substitute(stage.base)
        assert PINNED.match(image), f"stage {stage.name}: base image {image!r} is not pinned to a version"
    assert df.external_base("slim").startswith("python:3.11")
    assert df.external_base("cuda").startswith("nvidia/cuda:")


def test_every_copy_source_is_in_the_build_context(df: dfs.Dockerfile) -> None:
    ignore = DockerIgnore((REPO / ".dockerignore").read_text())
    stage_names = {s.name for s in df.stages}
    copies = [i for s in df.stages for i in s.instructions if i.keyword in ("COPY", "ADD")]
    assert copies
    for instr in copies:
        if "from" in instr.flags:
            assert instr.flags["from"] in stage_names, (
                f"line {instr.line}: unknown stage {instr.flags['from']}"
            )
            continue
        for src in instr.args[:-1]:
            path = REPO / src
            assert path.exists(), f"line {instr.line}: COPY source {src} does not exist in the repository"
            assert not ignore.excluded(src), f"line {instr.line}: .dockerignore excludes COPY source {src}"
            if path.is_dir():
                files = [p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
                kept = [p for p in files if not ignore.excluded(p.relative_to(REPO).as_posix())]
                assert kept and len(kept) == len(files), f"{src}: .dockerignore drops some of its sources"


def test_dockerignore_keeps_heavy_and_secret_paths_out() -> None:
    ignore = DockerIgnore((REPO / ".dockerignore").read_text())
    for path in (
        ".venv/bin/python",
        ".git/HEAD",
        ".env",
        "models/x.onnx",
        "var/gallery/db.sqlite",
        "tests/test_dockerfile.py",
        "shared/__pycache__/settings.cpython-311.pyc",
    ):
        assert ignore.excluded(path), f"{path} would be sent to the Docker daemon"
    for path in ("pyproject.toml", "shared/settings.py", "mindsight/cli/main.py"):
        assert not ignore.excluded(path)


def test_bind_mounts_and_copy_from_name_earlier_stages(df: dfs.Dockerfile) -> None:
    seen: set[str] = set()
    for stage in df.stages:
        for instr in stage.all("RUN"):
            for mount in re.findall(r"from=([\w-]+)", instr.flags.get("mount", "")):
                assert mount in seen, f"line {instr.line}: mounts {mount} before it is defined"
        seen.add(stage.name)


@pytest.mark.parametrize("target", FINAL_TARGETS)
def test_final_stage_runs_as_non_root_with_workdir_and_no_build_tools(
    df: dfs.Dockerfile, target: str
) -> None:
    user = df.effective(target, "USER")
    assert user is not None, f"{target}: no USER, so it would run as root"
    uid = user.value.split(":")[0]
    assert uid not in ("root", "0") and (not uid.isdigit() or int(uid) >= 1000), f"{target}: USER {uid}"
    assert df.effective(target, "WORKDIR") is not None
    for stage in df.lineage(target):
        for instr in stage.all("RUN"):
            assert not BUILD_TOOLS.search(instr.value), (
                f"{stage.name}: installs build tools: {instr.value[:80]}"
            )
            if "pip install" in instr.value:
                assert "--no-index" in instr.value, (
                    f"line {instr.line}: final stages install only built wheels"
                )
        assert all("from" not in i.flags for i in stage.all("COPY")), "wheels come in by bind mount, not COPY"


@pytest.mark.parametrize("target", PRODUCT_TARGETS)
def test_product_images_enter_mindsight_and_check_health_on_9100(df: dfs.Dockerfile, target: str) -> None:
    entry = df.effective(target, "ENTRYPOINT")
    assert entry is not None and entry.exec_form() == ["mindsight"]
    health = df.effective(target, "HEALTHCHECK")
    assert health is not None
    assert health.json and health.args[0] == "CMD", "exec form, no shell, no curl"
    argv = list(health.args[1:])
    assert argv[:2] == ["mindsight", "healthcheck"]
    assert argv[2:] == ["--port", "9100"]
    assert resolve(argv[1:]).name == "healthcheck"


def test_dashboard_image_enters_rq_dashboard(df: dfs.Dockerfile) -> None:
    entry = df.effective("dashboard", "ENTRYPOINT")
    assert entry is not None and entry.exec_form() == ["rq-dashboard"]
    health = df.effective("dashboard", "HEALTHCHECK")
    assert health is not None and health.json and list(health.args[1:3]) == ["mindsight", "healthcheck"]


def test_entry_point_is_the_console_script(pyproject: dict[str, Any]) -> None:
    target = pyproject["project"]["scripts"]["mindsight"]
    module, _, attr = target.partition(":")
    assert (module, attr) == ("mindsight.cli.main", "cli")
    from mindsight.cli.main import cli

    assert isinstance(cli, click.Group)


def test_every_image_installs_exactly_its_lock(df: dfs.Dockerfile) -> None:
    """Issue 9 item 5: each wheels stage builds from one lock and ships it; the image installs only that."""
    locks = {"slim": "slim", "dashboard": "dashboard", "full": "full", "cuda": "cuda"}
    for target, lock in locks.items():
        wheels = df.stage(f"wheels-{target}")
        built = " ".join(i.value for i in wheels.all("RUN"))
        assert f"requirements/{lock}.txt /wheels/requirements.txt" in built, f"wheels-{target}"
        assert "--no-deps" in built
        installs = [i for s in df.lineage(target) for i in s.all("RUN") if "pip install" in i.value]
        (install,) = installs
        assert f"from=wheels-{target}," in install.flags["mount"]
        assert "--no-deps" in install.value and "-r /wheels/requirements.txt" in install.value
        assert "pip uninstall" not in install.value, "the lock already holds the right variant"
    assert not [a for a in df.args if "VERSION" in a], "versions live in the locks, not in build args"


def test_mount_points_exist_for_the_app_user(df: dfs.Dockerfile) -> None:
    """Fresh named volumes copy ownership from the image, so /models and /gallery must belong to the user."""
    for target in PRODUCT_TARGETS:
        runs = " ".join(i.value for s in df.lineage(target) for i in s.all("RUN"))
        assert (
            re.search(r"mkdir -p /models /gallery", runs)
            and "chown mindsight:mindsight /models /gallery" in runs
        )
        user = df.effective(target, "USER")
        assert user is not None and "useradd --system --uid " + user.value.split(":")[0] in runs


def test_hadolint_finds_nothing() -> None:
    """The real linter, at its default threshold; an ignore needs a `# hadolint ignore=` with a reason."""
    findings = hadolint(DOCKERFILE)
    assert not findings, "\n".join(f"line {f['line']} {f['code']}: {f['message']}" for f in findings)
