"""The face pack lives in the models volume: downloaded there, found there by the face worker (issue 9.1).

Both steps run as real processes with different HOMEs and FACE_MODEL_DIR unset, as compose's one-shot
`models` service and `worker-photo` do: nothing may depend on ~/.insightface.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

from shared.models.store.locations import face_pack_dir, model_locations
from shared.settings import Settings
from tests.fixtures.settings import TEST_TOKEN

REPO = Path(__file__).parents[1]


def _run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mindsight", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=240,
    )


def _env(tmp_path: Path, home: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FACE_", "MINDSIGHT_", "HF_"))}
    (tmp_path / home).mkdir(exist_ok=True)
    return {
        **env,
        "PYTHONPATH": str(REPO),
        "HOME": str(tmp_path / home),
        "PROCESSING_INTERNAL_TOKEN": TEST_TOKEN,
        "MINDSIGHT_MODELS_DIR": str(tmp_path / "models"),
        "FACE_BACKEND": "insightface",
        "FACE_MODEL_NAME": "buffalo_l",
        **extra,
    }


def test_download_into_the_models_volume_then_a_worker_with_another_home_finds_it(
    file_server: tuple[str, Path], insightface_model_root: Path, redis_url: str, tmp_path: Path
) -> None:
    url, www = file_server
    with zipfile.ZipFile(www / "buffalo_l.zip", "w") as zf:
        for onnx in (insightface_model_root / "buffalo_l").glob("*.onnx"):
            zf.write(onnx, f"buffalo_l/{onnx.name}")
    workdir = tmp_path / "work"
    workdir.mkdir()
    fetched = _run(
        ["models", "download", "--face"],
        _env(tmp_path, "home-models-job", FACE_MODEL_URL=f"{url}/{{name}}.zip"),
        workdir,
    )
    assert fetched.returncode == 0, fetched.stdout + fetched.stderr
    pack = tmp_path / "models" / "insightface" / "buffalo_l"
    assert sorted(p.name for p in pack.glob("*.onnx")) == sorted(
        p.name for p in (insightface_model_root / "buffalo_l").glob("*.onnx")
    )
    assert not (tmp_path / "home-models-job" / ".insightface").exists()

    worker = _run(
        ["worker", "face", "--burst"],
        _env(tmp_path, "home-worker", MINDSIGHT_OFFLINE="1", REDIS_URL=redis_url),
        workdir,
    )
    assert worker.returncode == 0, worker.stdout + worker.stderr
    assert "face ready" in worker.stderr + worker.stdout


def test_face_model_dir_stays_an_override(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    default = make_settings(FACE_MODEL_DIR=None)
    assert face_pack_dir(default.face) == default.store.models_dir / "insightface" / "buffalo_l"
    moved = make_settings(FACE_MODEL_DIR=str(tmp_path / "faces"), FACE_MODEL_NAME="antelopev2")
    assert face_pack_dir(moved.face) == tmp_path / "faces" / "antelopev2"


def test_one_answer_to_where_each_model_lives(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    settings = make_settings(
        FACE_MODEL_DIR=None,
        CLIP_MODELS="vitl=openai/clip-vit-large-patch14,oc=ViT-B-32/laion2b_s34b_b79k",
        PROCESSING_DEFAULT_MODEL="vitl",
        CAPTION_MODEL_NAME="Salesforce/blip-image-captioning-base",
    )
    models = settings.store.models_dir
    where = model_locations(settings)
    assert where.clip == {"vitl": models / "openai" / "clip-vit-large-patch14", "oc": None}
    assert where.caption == models / "Salesforce" / "blip-image-captioning-base"
    assert where.face == models / "insightface" / "buffalo_l"
    assert where.onnx == models / "onnx"
    assert where.caption_int8 == models / "int8" / "caption"
    assert where.inside(models) == {"clip:vitl": True, "clip:oc": False, "caption": True, "face": True}
