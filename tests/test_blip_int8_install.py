"""`mindsight models download` makes BLIP's checked int8 file on CPU; the caption worker then loads it.

A tiny random BLIP (real architecture) goes through the real download command, quantisation, check and
loader; a failed check is forced through the documented threshold, not by mocking the model.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from transformers import BlipConfig

from mindsight.cli.main import cli
from shared.models.base import Captioner
from shared.models.caption import blip_int8
from shared.models.caption.blip_captioner import BlipCaptioner, caption_needs_torch, load_captioner
from shared.models.caption.blip_decoder_onnx import CROSS_GRAPH, DECODER_GRAPH
from shared.models.caption.blip_int8_file import MANIFEST_NAME, WEIGHTS_FILE, verified_int8_file
from shared.models.caption.blip_onnx_captioner import ONNX_GENERATE_BATCH, TOKENIZER_FILE, OnnxBlipCaptioner
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


def captioner(make_settings: Callable[..., Settings], env: dict[str, str]) -> Captioner:
    settings = make_settings(**env)
    return load_captioner(settings.caption, settings.store, "cpu")


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

    # both parts on onnxruntime: what captioning needs without torch is in the folder too
    text = BlipConfig.from_pretrained(int8_dir(cpu_env)).text_config
    facts = manifest["decoding"]
    assert (facts["bos_token_id"], facts["eos_token_id"]) == (text.bos_token_id, text.sep_token_id)
    assert (int8_dir(cpu_env) / TOKENIZER_FILE).is_file()

    worker = captioner(make_settings, cpu_env)  # MINDSIGHT_CAPTION_PRECISION unset: auto
    assert isinstance(worker, OnnxBlipCaptioner)
    info = worker.runtime_info
    assert info.precision == "int8" and info.extra["int8_file"] == str(int8_dir(cpu_env))
    assert info.extra["int8_check"] == manifest["check"] and info.extra["torch"] is False
    assert info.extra["vision_encoder"] == info.extra["text_decoder"] == "onnxruntime-int8"
    assert info.runtime == "onnxruntime"  # what /readyz and the bench report

    # two photos per call (ONNX_GENERATE_BATCH): a one-photo step cannot keep two threads busy
    sizes: list[int] = []
    tokens = worker.tokens

    def counting(pixels: Any) -> Any:
        sizes.append(len(pixels))
        return tokens(pixels)

    worker.tokens = counting  # type: ignore[method-assign]
    _, photos = check_photos()
    captions = worker.predict(photos)
    assert len(captions) == 3 and sizes == [ONNX_GENERATE_BATCH, 1] == [2, 1]

    # the same captions as BLIP in torch around the same int8 graphs (transformers' preprocessing,
    # generate and tokenizer): the torch-free path changes where they run, not what they say
    settings = make_settings(**cpu_env)
    found = verified_int8_file(int8_dir(cpu_env), NAME, str(Path(cpu_env["MINDSIGHT_MODELS_DIR"]) / NAME))
    torch_path = BlipCaptioner(
        str(Path(cpu_env["MINDSIGHT_MODELS_DIR"]) / NAME), max_length=settings.caption.max_length,
        local_files_only=True, precision="auto", int8_file=found,
    )  # fmt: skip
    assert torch_path.predict(photos) == captions and torch_path.runtime_info.runtime == "onnxruntime"

    # a caption worker process with that folder never imports torch or transformers (~0.5 GB)
    script = (
        "import sys; from PIL import Image; from shared.settings import load_settings; "
        "from shared.models.caption.blip_captioner import caption_needs_torch, load_captioner; "
        "s = load_settings(None); assert not caption_needs_torch(s.caption, s.store, s.worker.device); "
        "c = load_captioner(s.caption, s.store, 'cpu', 2); c.predict([Image.new('RGB', (640, 480))]); "
        "print(type(c).__name__, 'torch' in sys.modules, 'transformers' in sys.modules)"
    )
    env = {**os.environ, **cpu_env, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert run.stdout.split() == ["OnnxBlipCaptioner", "False", "False"], run.stderr[-2000:]

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


@pytest.mark.parametrize(
    "damage",
    [
        {"bos_token_id": "[DEC]"},
        {"image_size": [384]},
        {"image_mean": [0.5, 0.5, float("nan"), 0.5]},
        {"heads": 0},
        {"layers": None},
        {"image_size": {"height": 384, "width": 384}},  # a dict where a pair belongs
    ],
)
def test_unreadable_decoding_facts_fall_back_to_torch_loudly(
    cpu_env: dict[str, str],
    make_settings: Callable[..., Settings],
    caplog: pytest.LogCaptureFixture,
    damage: dict[str, Any],
) -> None:
    """A hand-edited or damaged manifest never stops a caption worker: it captions on torch and says how
    to remake the folder."""
    code, out = download(cpu_env)
    assert code == 0, out
    path = int8_dir(cpu_env) / MANIFEST_NAME
    manifest = json.loads(path.read_text())
    manifest["decoding"] |= damage
    path.write_text(json.dumps(manifest))
    with caplog.at_level(logging.WARNING):
        worker = captioner(make_settings, cpu_env)
    assert isinstance(worker, BlipCaptioner) and worker.runtime_info.precision == "int8"
    assert "decoding facts are unreadable" in caplog.text and "models download --caption" in caplog.text
    _, photos = check_photos()
    assert len(worker.predict(photos[:1])) == 1
    settings = make_settings(**cpu_env)
    assert caption_needs_torch(settings.caption, settings.store, "cpu")
