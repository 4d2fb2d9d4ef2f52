"""BLIP int8 on CPU by default: dynamic quantisation checked against fp32 at load, fp32 when it fails.

A tiny random BLIP of the real architecture, loaded from disk through `load_captioner`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from PIL import Image
from skimage import data

from shared.errors import ConfigError
from shared.models.caption import blip_int8
from shared.models.caption.blip_captioner import BlipCaptioner, load_captioner
from shared.settings import Settings


def captioner(make_settings: Callable[..., Settings], tiny_blip_dir: Path, **env: str) -> BlipCaptioner:
    settings = make_settings(CAPTION_MODEL_NAME=str(tiny_blip_dir), CAPTION_MAX_LENGTH="12", **env)
    loaded = load_captioner(settings.caption, settings.store, "cpu")
    assert isinstance(loaded, BlipCaptioner)
    return loaded


DYNAMIC = torch.ao.nn.quantized.dynamic.Linear


def linear_kinds(model: torch.nn.Module) -> set[str]:
    """The Linear classes a model holds: `int8` (dynamic quantised) or `fp32` (torch.nn.Linear)."""
    return {
        "int8" if isinstance(m, DYNAMIC) else "fp32"
        for m in model.modules()
        if isinstance(m, DYNAMIC | torch.nn.Linear)
    }


def test_cpu_default_is_int8_checked_against_fp32(
    make_settings: Callable[..., Settings], tiny_blip_dir: Path
) -> None:
    int8 = captioner(make_settings, tiny_blip_dir)  # MINDSIGHT_CAPTION_PRECISION unset: auto
    info = int8.runtime_info
    assert info.precision == "int8"
    check = info.extra["int8_check"]
    assert check["passed"] and len(check["photos"]) == 3 and check["steps"] == blip_int8.CHECK_STEPS
    assert check["token_agreement"] >= blip_int8.MIN_TOKEN_AGREEMENT
    assert check["logits_cosine_min"] >= blip_int8.MIN_LOGITS_COSINE
    # Both the vision encoder and the text decoder (LM head included) run quantised Linear layers.
    model = int8._model
    assert linear_kinds(model.vision_model) == {"int8"}
    assert linear_kinds(model.text_decoder) == {"int8"}

    fp32 = captioner(make_settings, tiny_blip_dir, MINDSIGHT_CAPTION_PRECISION="fp32")
    assert fp32.runtime_info.precision == "fp32" and "int8_check" not in fp32.runtime_info.extra
    assert linear_kinds(fp32._model) == {"fp32"}
    photos = [Image.fromarray(getattr(data, n)()) for n in ("astronaut", "rocket")]
    assert all(isinstance(c, str) for c in int8.predict(photos))


def test_failed_check_keeps_fp32_loudly(
    make_settings: Callable[..., Settings],
    tiny_blip_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(blip_int8, "MIN_LOGITS_COSINE", 1.01)  # no quantised model reaches it
    with caplog.at_level(logging.WARNING):
        loaded = captioner(make_settings, tiny_blip_dir)
    assert loaded.runtime_info.precision == "fp32"
    assert loaded.runtime_info.extra["int8_check"]["passed"] is False
    assert "int8 FAILED its check against fp32" in caplog.text and "captions stay fp32" in caplog.text
    assert linear_kinds(loaded._model) == {"fp32"}


def test_int8_on_a_gpu_is_refused(tiny_blip_dir: Path) -> None:
    with pytest.raises(ConfigError, match="MINDSIGHT_CAPTION_PRECISION=int8 runs on the CPU only"):
        BlipCaptioner(str(tiny_blip_dir), device="cuda:0", precision="int8")
    assert BlipCaptioner(str(tiny_blip_dir), device="cuda:0", precision="auto").wanted_precision == "auto"


def test_unknown_precision_is_refused(tiny_blip_dir: Path) -> None:
    with pytest.raises(ConfigError, match="auto, fp32 or int8"):
        BlipCaptioner(str(tiny_blip_dir), precision="fp16")
