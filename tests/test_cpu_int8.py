"""int8 by default on CPU: `mindsight models download` makes the checked int8 CLIP export, workers take it.

A tiny random transformers CLIP (real architecture) goes through the real download, export, checks and
registry; a failed check is forced through the documented threshold, not by mocking the model.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from mindsight.cli.main import cli
from shared.models.clip.registry import load_clip_models
from shared.models.clip.runtime import choose_onnx_export
from shared.models.onnx import export as export_module
from shared.models.onnx.manifest import MANIFEST_NAME
from shared.settings import Settings
from tests.fixtures.clip_models import TINY_CLIP_DIM


@pytest.fixture
def cpu_env(tmp_path: Path, tiny_transformers_clip_dir: Path) -> dict[str, str]:
    """A CPU deployment whose one CLIP model is already downloaded (so only the int8 step runs)."""
    models = tmp_path / "models"
    shutil.copytree(tiny_transformers_clip_dir, models / "openai" / "clip-vit-base-patch32")
    return {
        "CLIP_MODELS": "b32=openai/clip-vit-base-patch32",
        "PROCESSING_DEFAULT_MODEL": "b32",
        "PROCESSING_EMBEDDING_DIM": str(TINY_CLIP_DIM),
        "CLIP_MODEL_DIMS": "",
        "MINDSIGHT_MODELS_DIR": str(models),
        "MINDSIGHT_OFFLINE": "1",
        "MINDSIGHT_DEVICE": "cpu",
    }


def download(env: dict[str, str]) -> tuple[int, str]:
    args = ["--env-file", "/dev/null", "models", "download", "--clip"]
    result = CliRunner().invoke(cli, args, env=env)
    return result.exit_code, result.output


def int8_dir(env: dict[str, str]) -> Path:
    return Path(env["MINDSIGHT_MODELS_DIR"]) / "onnx" / "b32-int8"


def test_download_makes_a_checked_int8_export_that_cpu_workers_take(
    cpu_env: dict[str, str], make_settings: Callable[..., Settings]
) -> None:
    code, out = download(cpu_env)
    assert code == 0, out
    assert "exported int8    b32:" in out and "image cosine to fp32 on 3 photos" in out
    checks = json.loads((int8_dir(cpu_env) / MANIFEST_NAME).read_text())["checks"]
    assert checks["passed"] is True and checks["min_cosine_required"] == export_module.INT8_MIN_COSINE
    assert len(checks["photos"]) == 3 and checks["image_cosine_vs_fp32"]["min"] >= 0.99

    settings = make_settings(**cpu_env)  # MINDSIGHT_CLIP_PRECISION unset: auto
    assert settings.clip.precision == "auto"
    model = load_clip_models(settings.clip, settings.store, "cpu", device_pref="cpu")["b32"]
    info = model.runtime_info
    assert (info.runtime, info.precision) == ("onnxruntime", "int8")
    assert model.source == "openai/clip-vit-base-patch32"  # callbacks name the model, not the export
    # int8 weights are not pre-packed (a second copy of every weight, no faster: INT8_PREPACKING).
    session = model.backbone._sessions["image"]  # type: ignore[attr-defined]
    assert session.get_session_options().get_session_config_entry("session.disable_prepacking") == "1"

    # On a GPU the same files give fp32; a second download finds the export and leaves it.
    gpu = choose_onnx_export("b32", model.source, settings.clip, settings.store, "auto", gpu=True)
    assert gpu is not None and gpu.manifest.precision == "fp32"
    code, out = download(cpu_env)
    assert code == 0 and f"present  int8    b32: {int8_dir(cpu_env)}" in out, out


def test_precision_fp32_opts_out(cpu_env: dict[str, str], make_settings: Callable[..., Settings]) -> None:
    env = {**cpu_env, "MINDSIGHT_CLIP_PRECISION": "fp32"}
    code, out = download(env)
    assert code == 0, out
    assert "int8 CLIP exports not made: MINDSIGHT_CLIP_PRECISION=fp32" in out
    assert not int8_dir(env).exists()
    settings = make_settings(**env)
    model = load_clip_models(settings.clip, settings.store, "cpu", device_pref="cpu")["b32"]
    assert model.runtime_info.precision == "fp32"


def test_a_failed_int8_check_keeps_fp32_and_says_so_loudly(
    cpu_env: dict[str, str], make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(export_module, "INT8_MIN_COSINE", 1.01)  # no int8 model can reach it
    code, out = download(cpu_env)
    assert code == 0, out  # the workers must still start, on fp32
    assert "fp32-kept int8    b32:" in out and "failed its export checks" in out
    assert "WARNING: CLIP model b32 has NO int8 export and runs fp32 on this CPU" in out
    assert not int8_dir(cpu_env).exists()
    settings = make_settings(**cpu_env)
    model = load_clip_models(settings.clip, settings.store, "cpu", device_pref="cpu")["b32"]
    assert (model.runtime_info.runtime, model.runtime_info.precision) == ("onnxruntime", "fp32")


def test_an_int8_export_of_another_source_is_not_taken(
    cpu_env: dict[str, str], make_settings: Callable[..., Settings]
) -> None:
    code, out = download(cpu_env)
    assert code == 0, out
    manifest = int8_dir(cpu_env) / MANIFEST_NAME
    data = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**data, "source": "openai/other"}))
    settings = make_settings(**cpu_env)
    model = load_clip_models(settings.clip, settings.store, "cpu", device_pref="cpu")["b32"]
    assert model.runtime_info.precision == "fp32"
