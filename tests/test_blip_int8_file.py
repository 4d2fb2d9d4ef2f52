"""BLIP's int8 file: saved from the quantised model, loaded back without fp32, taken only when it matches.

A tiny random BLIP of the real architecture (tied LM head, non-persistent position ids), quantised by the
production code and loaded through `load_captioner` like the caption worker does.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from PIL import Image
from skimage import data
from transformers import BlipForConditionalGeneration, BlipProcessor

from shared.models.caption import blip_int8
from shared.models.caption.blip_captioner import BlipCaptioner, load_captioner
from shared.models.caption.blip_int8_file import (
    MANIFEST_NAME,
    WEIGHTS_FILE,
    Int8FileManifest,
    current_versions,
    load_int8_file,
    same_outputs,
    save_int8_file,
    weights_fingerprint,
)
from shared.models.caption.blip_vision_onnx import OnnxVisionEncoder, export_vision_int8
from shared.models.store.locations import caption_int8_dir
from shared.settings import Settings

NAME = "Salesforce/blip-image-captioning-base"


@pytest.fixture(scope="module")
def quantised(tiny_blip_dir: Path) -> tuple[object, blip_int8.Fp32Reference]:
    """The tiny BLIP quantised in memory as at load, and fp32's reference on the check photos."""
    model = BlipForConditionalGeneration.from_pretrained(tiny_blip_dir).eval()
    reference = blip_int8.fp32_reference(model, BlipProcessor.from_pretrained(tiny_blip_dir))
    return blip_int8.quantize_blip(model, inplace=True), reference


def saved(folder: Path, model: object, weights_dir: Path, changes: dict[str, object] | None = None) -> Path:
    manifest = Int8FileManifest(
        source=NAME,
        weights=weights_fingerprint(str(weights_dir)),
        versions=current_versions(),
        check={"photos": ["p"], "steps": 8, "token_agreement": 1.0, "exact_token_agreement": 1.0,
               "free_running_agreement": 1.0, "logits_cosine_min": 0.999, "logits_cosine_mean": 0.999,
               "passed": True},
        thresholds={"min_token_agreement": blip_int8.MIN_TOKEN_AGREEMENT},
    )  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    save_int8_file(folder, model, manifest)
    data = json.loads((folder / MANIFEST_NAME).read_text())
    (folder / MANIFEST_NAME).write_text(json.dumps({**data, **(changes or {})}))
    return folder


def test_the_loaded_file_computes_exactly_what_the_quantised_model_does(
    quantised: tuple[object, blip_int8.Fp32Reference], tiny_blip_dir: Path, tmp_path: Path
) -> None:
    model, ref = quantised
    folder = saved(tmp_path / "int8", model, tiny_blip_dir)
    with warnings.catch_warnings():  # quantized tensors' storages are flagged as deprecated
        warnings.simplefilter("ignore", UserWarning)
        state = torch.load(folder / WEIGHTS_FILE, weights_only=True)  # no pickled code: tensors only
    assert any(k.endswith("._packed_params._packed_params") for k in state["state_dict"])
    assert list(state["buffers"]) == ["text_decoder.bert.embeddings.position_ids"]  # not in a state_dict

    loaded = load_int8_file(folder)
    dynamic_linear = torch.ao.nn.quantized.dynamic.Linear
    linears = [m for m in loaded.modules() if isinstance(m, torch.nn.Linear | dynamic_linear)]
    assert linears and all(isinstance(m, dynamic_linear) for m in linears)
    assert len(linears) == sum(isinstance(m, dynamic_linear) for m in model.modules())  # type: ignore[attr-defined]
    with torch.inference_mode():
        want = model(pixel_values=ref.pixels, input_ids=ref.tokens).logits  # type: ignore[operator]
        got = loaded(pixel_values=ref.pixels, input_ids=ref.tokens).logits
        assert torch.equal(want, got)
        steps = {"max_new_tokens": 12, "min_new_tokens": 12, "num_beams": 1, "do_sample": False}
        tokens = model.generate(pixel_values=ref.pixels, **steps)  # type: ignore[attr-defined]
        assert torch.equal(tokens, loaded.generate(pixel_values=ref.pixels, **steps))
    assert blip_int8.check_int8(loaded, ref) == blip_int8.check_int8(model, ref)


def test_loading_never_gives_an_fp32_linear_weight_storage(
    quantised: tuple[object, blip_int8.Fp32Reference],
    tiny_blip_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every nn.Linear is built on the meta device and replaced before any storage is allocated."""
    folder = saved(tmp_path / "int8", quantised[0], tiny_blip_dir)
    built: list[str] = []
    at_storage: list[int] = []
    init, to_empty = torch.nn.Linear.__init__, torch.nn.Module.to_empty

    def spy_init(self: torch.nn.Linear, *args: object, **kwargs: object) -> None:
        init(self, *args, **kwargs)  # type: ignore[arg-type]
        built.append(self.weight.device.type)

    def spy_to_empty(self: torch.nn.Module, **kwargs: object) -> torch.nn.Module:
        at_storage.append(sum(type(m) is torch.nn.Linear for m in self.modules()))
        return to_empty(self, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(torch.nn.Linear, "__init__", spy_init)
    monkeypatch.setattr(torch.nn.Module, "to_empty", spy_to_empty)
    loaded = load_int8_file(folder)
    assert built and set(built) == {"meta"}
    assert at_storage == [0]  # no fp32 Linear left when the skeleton gets its storage
    assert not any(type(m) is torch.nn.Linear for m in loaded.modules())


def test_an_onnx_vision_encoder_replaces_the_torch_one_in_the_file(
    tiny_blip_dir: Path, tmp_path: Path
) -> None:
    """With the encoder exported to onnxruntime int8, the file holds no vision weights, the loaded model
    runs the graph and computes exactly what the model it was saved from does, and stays close to fp32."""
    fp32 = BlipForConditionalGeneration.from_pretrained(tiny_blip_dir).eval()
    ref = blip_int8.fp32_reference(fp32, BlipProcessor.from_pretrained(tiny_blip_dir))
    folder = tmp_path / "int8"
    folder.mkdir()
    graph = export_vision_int8(fp32, folder)
    with torch.inference_mode():
        want_vision = fp32.vision_model(pixel_values=ref.pixels).last_hidden_state
    fp32.vision_model = OnnxVisionEncoder(graph, threads=1)
    model = blip_int8.quantize_blip(fp32, inplace=True)
    with torch.inference_mode():
        got_vision = model.vision_model(pixel_values=ref.pixels).last_hidden_state
    cosine = torch.nn.functional.cosine_similarity(want_vision.flatten(1), got_vision.flatten(1))
    assert float(cosine.min()) > 0.99 and not torch.equal(want_vision, got_vision)  # int8: close, not equal

    saved(folder, model, tiny_blip_dir, {"vision": "onnxruntime-int8"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        state = torch.load(folder / WEIGHTS_FILE, weights_only=True)["state_dict"]
    assert state and not [k for k in state if k.startswith("vision_model.")]
    loaded = load_int8_file(folder, threads=1)
    assert isinstance(loaded.vision_model, OnnxVisionEncoder) and loaded.vision_model.graph == graph
    assert same_outputs(loaded, model, ref.pixels, ref.tokens)
    assert blip_int8.check_int8(loaded, ref).passed


@pytest.fixture
def store(tmp_path: Path, tiny_blip_dir: Path) -> dict[str, str]:
    """A models dir holding the downloaded tiny BLIP under its hub id, as `models download` leaves it."""
    models = tmp_path / "models"
    shutil.copytree(tiny_blip_dir, models / NAME)
    return {"MINDSIGHT_MODELS_DIR": str(models), "CAPTION_MODEL_NAME": NAME, "CAPTION_MAX_LENGTH": "12"}


def start(make_settings: Callable[..., Settings], env: dict[str, str]) -> BlipCaptioner:
    settings = make_settings(**env)
    captioner = load_captioner(settings.caption, settings.store, "cpu")
    assert isinstance(captioner, BlipCaptioner)
    return captioner


def test_the_caption_worker_takes_a_matching_file(
    quantised: tuple[object, blip_int8.Fp32Reference],
    store: dict[str, str],
    make_settings: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    models = Path(store["MINDSIGHT_MODELS_DIR"])
    folder = saved(caption_int8_dir(models), quantised[0], models / NAME)
    monkeypatch.setattr(blip_int8, "fp32_reference", None)  # no check at start: it ran at download
    captioner = start(make_settings, store)
    info = captioner.runtime_info
    assert info.precision == "int8" and info.extra["int8_file"] == str(folder)
    assert info.extra["int8_check"]["logits_cosine_min"] == 0.999  # the check made at download
    captions = captioner.predict([Image.fromarray(data.astronaut()), Image.fromarray(data.rocket())])
    assert len(captions) == 2 and all(isinstance(c, str) for c in captions)
    monkeypatch.undo()
    fp32 = start(make_settings, {**store, "MINDSIGHT_CAPTION_PRECISION": "fp32"})
    assert fp32.runtime_info.precision == "fp32" and "int8_file" not in fp32.runtime_info.extra


@pytest.mark.parametrize(
    "case", ["other source", "other torch", "failed check", "weights replaced", "corrupt", "other format"]
)
def test_a_file_that_does_not_match_is_not_taken(
    quantised: tuple[object, blip_int8.Fp32Reference],
    store: dict[str, str],
    make_settings: Callable[..., Settings],
    caplog: pytest.LogCaptureFixture,
    case: str,
) -> None:
    models = Path(store["MINDSIGHT_MODELS_DIR"])
    folder = caption_int8_dir(models)
    changes: dict[str, object] = {
        "other source": {"source": "Salesforce/blip-image-captioning-large"},
        "other torch": {"versions": {**current_versions(), "torch": "0.0.1"}},
        "failed check": {"check": {"passed": False}},
        "other format": {"format": 0},
    }.get(case, {})
    saved(folder, quantised[0], models / NAME, changes)
    if case == "weights replaced":
        weights = models / NAME / "model.safetensors"
        os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    if case == "corrupt":
        (folder / WEIGHTS_FILE).write_bytes(b"not a torch file")
    with caplog.at_level(logging.INFO):
        captioner = start(make_settings, store)
    info = captioner.runtime_info
    assert info.precision == "int8" and "int8_file" not in info.extra  # quantised and checked at start
    assert info.extra["int8_check"]["steps"] == blip_int8.CHECK_STEPS
    expected = "cannot load its int8 file" if case == "corrupt" else "int8 file not used"
    assert expected in caplog.text and "mindsight models download" in caplog.text
