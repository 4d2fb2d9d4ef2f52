"""`mindsight models download` makes BLIP's checked int8 file on CPU; the caption worker then loads it.

A tiny random BLIP (real architecture) goes through the real download command, quantisation, check and
loader; a failed check is forced through the documented threshold, not by mocking the model.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from mindsight.cli.main import cli
from shared.models.caption import blip_int8
from shared.models.caption.blip_captioner import ONNX_GENERATE_BATCH, BlipCaptioner, load_captioner
from shared.models.caption.blip_decoder_onnx import CROSS_GRAPH, DECODER_GRAPH
from shared.models.caption.blip_int8_file import MANIFEST_NAME, WEIGHTS_FILE
from shared.models.caption.blip_vision_onnx import VISION_GRAPH
from shared.models.onnx import export as onnx_export
from shared.models.onnx.checks import check_photos
from shared.models.store.locations import caption_int8_dir
from shared.settings import Settings

NAME = "Salesforce/blip-image-captioning-base"


@pytest.fixture
def cpu_env(tmp_path: Path, tiny_blip_dir: Path) -> dict[str, str]:
    """A CPU deployment whose caption model is already downloaded (so only the int8 step runs)."""
    models = tmp_path / "models"
    shutil.copytree(tiny_blip_dir, models / NAME)
    return {
        "MINDSIGHT_MODELS_DIR": str(models),
        "CAPTION_MODEL_NAME": NAME,
        "CAPTION_MAX_LENGTH": "12",
        "MINDSIGHT_OFFLINE": "1",
        "MINDSIGHT_DEVICE": "cpu",
    }


def download(env: dict[str, str]) -> tuple[int, str]:
    args = ["--env-file", "/dev/null", "models", "download", "--caption"]
    result = CliRunner().invoke(cli, args, env=env)
    crash = f"\n{result.exception!r}" if result.exit_code and result.exception else ""
    return result.exit_code, result.output + crash


def int8_dir(env: dict[str, str]) -> Path:
    return caption_int8_dir(Path(env["MINDSIGHT_MODELS_DIR"]))


def captioner(make_settings: Callable[..., Settings], env: dict[str, str]) -> BlipCaptioner:
    settings = make_settings(**env)
    loaded = load_captioner(settings.caption, settings.store, "cpu")
    assert isinstance(loaded, BlipCaptioner)
    return loaded


def test_download_makes_a_checked_int8_file_that_the_caption_worker_takes(
    cpu_env: dict[str, str], make_settings: Callable[..., Settings]
) -> None:
    code, out = download(cpu_env)
    assert code == 0, out
    parts = "vision encoder onnxruntime-int8, text decoder onnxruntime-int8"
    assert f"exported int8    caption: {int8_dir(cpu_env)} ({parts}; token" in out
    manifest = json.loads((int8_dir(cpu_env) / MANIFEST_NAME).read_text())
    assert manifest["vision"] == manifest["decoder"] == "onnxruntime-int8"
    assert all((int8_dir(cpu_env) / graph).is_file() for graph in (VISION_GRAPH, DECODER_GRAPH, CROSS_GRAPH))
    assert manifest["source"] == NAME and manifest["check"]["passed"] is True
    assert manifest["thresholds"]["min_logits_cosine"] == blip_int8.MIN_LOGITS_COSINE
    assert manifest["check"]["logits_cosine_min"] >= blip_int8.MIN_LOGITS_COSINE
    assert set(manifest["versions"]) == {"torch", "transformers"}
    assert list(manifest["weights"]) == ["model.safetensors"]
    assert not [p for p in int8_dir(cpu_env).parent.iterdir() if p.name.startswith(".")]  # no staging left

    worker = captioner(make_settings, cpu_env)  # MINDSIGHT_CAPTION_PRECISION unset: auto
    info = worker.runtime_info
    assert info.precision == "int8" and info.extra["int8_file"] == str(int8_dir(cpu_env))
    assert info.extra["int8_check"] == manifest["check"]
    assert info.extra["vision_encoder"] == info.extra["text_decoder"] == "onnxruntime-int8"
    assert info.runtime == "onnxruntime"  # what /readyz and the bench report: no longer "torch"

    # the onnxruntime decoder captions two photos per call (ONNX_GENERATE_BATCH), torch's one
    sizes: list[int] = []
    generate = worker._model.generate

    def counting(**kw: Any) -> Any:
        sizes.append(len(kw["pixel_values"]))
        return generate(**kw)

    worker._model.generate = counting
    _, photos = check_photos()
    assert len(worker.predict(photos)) == 3 and sizes == [ONNX_GENERATE_BATCH, 1] == [2, 1]

    code, out = download(cpu_env)  # a second download finds the file and leaves it
    assert code == 0 and f"present  int8    caption: {int8_dir(cpu_env)}" in out, out


def test_a_failed_check_writes_nothing_and_says_so_loudly(
    cpu_env: dict[str, str], make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(blip_int8, "MIN_LOGITS_COSINE", 1.01)  # no quantised model reaches it
    code, out = download(cpu_env)
    assert code == 0, out  # the workers must still start, on fp32
    assert "fp32-kept int8    caption: int8 FAILED its check against fp32" in out and "(>= 1.01)" in out
    assert "WARNING: caption model FAILED its int8 check and runs fp32 on this CPU" in out
    assert not int8_dir(cpu_env).exists() and not int8_dir(cpu_env).with_name(".caption.partial").exists()
    assert captioner(make_settings, cpu_env).runtime_info.precision == "fp32"  # the same check fails at start


@pytest.mark.parametrize(
    ("setting", "reason"),
    [
        ({"MINDSIGHT_CAPTION_PRECISION": "fp32"}, "MINDSIGHT_CAPTION_PRECISION=fp32"),
        ({"CAPTION_ENABLED": "0"}, "CAPTION_ENABLED=0"),
        ({"MINDSIGHT_DEVICE": "cuda"}, "MINDSIGHT_DEVICE=cuda"),
    ],
)
def test_no_int8_file_where_it_would_not_run(
    cpu_env: dict[str, str], setting: dict[str, str], reason: str
) -> None:
    code, out = download({**cpu_env, **setting})
    assert code == 0, out
    assert f"int8 caption model not made: {reason}" in out
    assert not int8_dir(cpu_env).exists()


def test_a_replaced_file_is_remade(cpu_env: dict[str, str]) -> None:
    code, out = download(cpu_env)
    assert code == 0, out
    manifest = int8_dir(cpu_env) / MANIFEST_NAME
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "source": "other/blip"}))
    code, out = download(cpu_env)
    assert code == 0 and "exported int8    caption" in out, out
    assert json.loads(manifest.read_text())["source"] == NAME and (int8_dir(cpu_env) / WEIGHTS_FILE).is_file()


def test_without_the_onnx_exporter_the_vision_encoder_stays_on_torch(
    cpu_env: dict[str, str], make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The slim-but-torch case: no ONNX export possible, so the whole model is torch int8, still checked."""
    monkeypatch.setattr(onnx_export, "EXPORT_DEPENDENCIES", ("torch", "no_such_exporter_module"))
    code, out = download(cpu_env)
    assert code == 0, out
    assert (
        "missing no_such_exporter_module" in out
        and "(vision encoder torch-int8, text decoder torch-int8; token" in out
    )
    manifest = json.loads((int8_dir(cpu_env) / MANIFEST_NAME).read_text())
    assert manifest["vision"] == manifest["decoder"] == "torch-int8"
    assert not [p for p in int8_dir(cpu_env).iterdir() if p.suffix in (".onnx", ".data")]
    info = captioner(make_settings, cpu_env).runtime_info
    assert info.precision == "int8" and info.extra["text_decoder"] == "torch-int8" and info.runtime == "torch"
