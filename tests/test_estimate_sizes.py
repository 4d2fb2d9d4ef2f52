"""deploy/docker/estimate_sizes.py: dependency closures behind the image sizes; the slim import boundary."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import subprocess
import sys
import sysconfig
from pathlib import Path
from types import ModuleType

import pytest
from packaging.utils import canonicalize_name

from tests.deploy_support.settings_catalog import REPO

SITE = Path(sysconfig.get_paths()["purelib"])


@pytest.fixture(scope="module")
def sizes() -> ModuleType:
    spec = importlib.util.spec_from_file_location("estimate_sizes", REPO / "deploy/docker/estimate_sizes.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_closures_follow_the_extras(sizes: ModuleType) -> None:
    dists = sizes.distributions(SITE)
    slim = sizes.closure(dists, "mindsight-ml", set())
    full = sizes.closure(dists, "mindsight-ml", {"torch", "faces"})
    assert {"rq", "redis", "onnxruntime", "fastapi", "numpy"} <= slim
    assert "torch" not in slim and "transformers" not in slim
    assert slim < full and {"torch", "transformers", "dlib-bin"} <= full
    assert not {"pytest", "ruff"} & full, "the test extra never reaches an image"


def test_estimates_grow_with_the_target(sizes: ModuleType) -> None:
    estimate = sizes.estimate(SITE)
    slim, full, cuda = estimate.values()
    # cuda vs full depends on which torch build this venv has, so only slim is compared.
    assert 50 * 2**20 < slim < full and slim < cuda


def test_missing_dependency_is_named(sizes: ModuleType) -> None:
    with pytest.raises(LookupError, match="no-such-dist"):
        sizes.closure({}, "no-such-dist", set())


SLIM_PROBE = """
import importlib, importlib.abc, json, sys
blocked = set(json.loads(sys.argv[1]))
class NotInSlim(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in blocked:
            raise ImportError(f"{name} is not in the slim image")
sys.meta_path.insert(0, NotInSlim())
for module in sys.argv[2:]:
    importlib.import_module(module)
"""


def test_slim_image_runs_its_commands_without_the_extras(sizes: ModuleType) -> None:
    """What compose runs on `slim` (router, gallery-dev, enqueue, status, dlq) imports no extra's module."""
    dists = sizes.distributions(SITE)
    extra_only = sizes.closure(dists, "mindsight-ml", {"torch", "faces"}) - sizes.closure(
        dists, "mindsight-ml", set()
    )
    blocked = sorted(
        module
        for module, owners in importlib.metadata.packages_distributions().items()
        if any(canonicalize_name(o) in extra_only for o in owners)
    )
    assert {"torch", "transformers", "cv2"} <= set(blocked)
    modules = [
        "mindsight.cli.router_cmd",
        "mindsight.cli.serve_cmd",
        "mindsight.cli.enqueue_cmd",
        "mindsight.cli.status_cmd",
        "mindsight.cli.dlq_cmd",
        "services.gallery.server",
        "workers.router",
    ]
    run = subprocess.run(
        [sys.executable, "-c", SLIM_PROBE, json.dumps(blocked), *modules],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-2000:]
