"""BLIP captioner: loaded from disk through `load_captioner`, run on real photos."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from skimage import data

from shared.errors import ConfigError
from shared.models.caption.blip_captioner import BlipCaptioner, load_captioner
from shared.settings import Settings
from tests.fixtures.captions import BLIP_WORDS, build_tiny_blip


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> list[Image.Image]:
    """Real photos, through a JPEG round trip like uploads."""
    out: list[Image.Image] = []
    root = tmp_path_factory.mktemp("caption-photos")
    for name in ("astronaut", "chelsea", "coffee", "rocket"):
        path = root / f"{name}.jpg"
        Image.fromarray(getattr(data, name)()).save(path, quality=90)
        with Image.open(path) as img:
            out.append(img.convert("RGB"))
    return out


def _captioner(make_settings: Callable[..., Settings], source: str | Path, **env: object) -> BlipCaptioner:
    settings = make_settings(CAPTION_MODEL_NAME=str(source), **env)
    captioner = load_captioner(settings.caption, settings.store, "cpu")
    assert isinstance(captioner, BlipCaptioner)
    return captioner


def test_batch_gives_one_caption_per_photo_equal_to_single_calls(
    make_settings: Callable[..., Settings], tiny_blip_dir: Path, photos: list[Image.Image]
) -> None:
    # fp32: int8's activation scales are per batch, so its captions may depend on their batch mates.
    captioner = _captioner(
        make_settings, tiny_blip_dir, CAPTION_MAX_LENGTH=12, MINDSIGHT_CAPTION_PRECISION="fp32"
    )
    assert captioner.loaded
    batch = captioner.predict(photos)
    assert len(batch) == len(photos)
    assert all(isinstance(c, str) and c == c.strip() for c in batch)
    assert batch == [captioner.predict([p])[0] for p in photos]
    assert len(set(batch)) > 1, "captions should depend on the photo"
    vocabulary = set(BLIP_WORDS)
    assert all(set(c.split()) <= vocabulary for c in batch), batch
    assert captioner.predict([]) == []


def test_on_a_cpu_each_photo_of_a_job_is_captioned_on_its_own(
    make_settings: Callable[..., Settings], tiny_blip_dir: Path, photos: list[Image.Image]
) -> None:
    # Batched generation is slower per caption on a CPU (CPU_GENERATE_BATCH), and with int8 a caption
    # would depend on its batch mates (activation scales are per call).
    captioner = _captioner(make_settings, tiny_blip_dir, CAPTION_MAX_LENGTH=8)
    model = captioner._model
    sizes: list[int] = []
    real = model.generate

    def counting(**kw: object) -> object:
        sizes.append(len(kw["pixel_values"]))  # type: ignore[arg-type]
        return real(**kw)

    model.generate = counting
    together = captioner.predict(photos)
    assert sizes == [1] * len(photos)
    assert together == [captioner.predict([p])[0] for p in photos]


def test_max_length_bounds_the_caption(
    make_settings: Callable[..., Settings], tiny_blip_dir: Path, photos: list[Image.Image]
) -> None:
    # max_length counts the [DEC] prompt token: 4 leaves room for at most 3 words.
    short = _captioner(make_settings, tiny_blip_dir, CAPTION_MAX_LENGTH=4).predict(photos)
    long = _captioner(make_settings, tiny_blip_dir, CAPTION_MAX_LENGTH=16).predict(photos)
    assert all(len(c.split()) <= 3 for c in short), short
    assert max(len(c.split()) for c in long) > 3, long
    assert all(lc.startswith(sc) for sc, lc in zip(short, long, strict=True))


def test_beam_search_setting_is_used(
    make_settings: Callable[..., Settings], tiny_blip_dir: Path, photos: list[Image.Image]
) -> None:
    beams = _captioner(make_settings, tiny_blip_dir, CAPTION_MAX_LENGTH=8, CAPTION_NUM_BEAMS=3)
    assert beams.num_beams == 3 and beams.runtime_info.extra["num_beams"] == 3
    captions = beams.predict(photos[:2])
    assert len(captions) == 2 and all(isinstance(c, str) for c in captions)


def test_empty_caption_is_returned_as_empty_string(
    make_settings: Callable[..., Settings], tmp_path: Path, photos: list[Image.Image]
) -> None:
    silent_dir = build_tiny_blip(tmp_path / "silent-blip", silent=True)
    assert _captioner(make_settings, silent_dir).predict(photos[:2]) == ["", ""]


def test_relative_source_is_found_under_models_dir(
    make_settings: Callable[..., Settings], tiny_blip_dir: Path
) -> None:
    captioner = _captioner(make_settings, tiny_blip_dir.name, MINDSIGHT_MODELS_DIR=str(tiny_blip_dir.parent))
    info = captioner.runtime_info
    assert (info.runtime, info.device) == ("torch", "cpu")
    assert info.extra["source"] == str(tiny_blip_dir)


def test_missing_directory_is_a_config_error_naming_it(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-blip"
    with pytest.raises(ConfigError) as err:
        _captioner(make_settings, missing)
    assert str(missing) in str(err.value) and "mindsight models download" in str(err.value)


def test_directory_without_weights_is_a_config_error(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    (tmp_path / "empty-blip").mkdir()
    with pytest.raises(ConfigError) as err:
        _captioner(make_settings, tmp_path / "empty-blip")
    assert "empty-blip" in str(err.value) and "MINDSIGHT_MODELS_DIR" in str(err.value)


def test_hub_id_not_downloaded_offline_is_a_config_error(make_settings: Callable[..., Settings]) -> None:
    with pytest.raises(ConfigError) as err:
        _captioner(make_settings, "Salesforce/blip-image-captioning-base", MINDSIGHT_OFFLINE="1")
    message = str(err.value)
    assert "Salesforce/blip-image-captioning-base" in message and "MINDSIGHT_OFFLINE" in message
    assert "mindsight models download" in message


@pytest.mark.parametrize(
    ("env", "needle"),
    [({"CAPTION_MAX_LENGTH": 1}, "CAPTION_MAX_LENGTH"), ({"CAPTION_NUM_BEAMS": 0}, "CAPTION_NUM_BEAMS")],
)
def test_impossible_generation_settings_are_refused(
    make_settings: Callable[..., Settings], tiny_blip_dir: Path, env: dict[str, object], needle: str
) -> None:
    with pytest.raises(ConfigError, match=needle):
        _captioner(make_settings, tiny_blip_dir, **env)


def test_torch_free_pixels_are_blips_pil_processor(tiny_blip_dir: Path) -> None:
    """The torch-free captioner's preprocessing equals BLIP's PIL image processor (what both paths use)."""
    from transformers import BlipConfig, BlipProcessor

    from shared.models.caption.blip_onnx_captioner import CaptionFacts

    processor = BlipProcessor.from_pretrained(tiny_blip_dir, backend="pil")
    model = SimpleNamespace(config=BlipConfig.from_pretrained(tiny_blip_dir))
    facts = CaptionFacts.of(model, processor)
    assert facts is not None and CaptionFacts.from_manifest(json.loads(json.dumps(facts.as_dict()))) == facts
    rgba = Image.fromarray(data.astronaut()).convert("RGBA")
    photos = [
        Image.fromarray(data.coffee()),
        Image.fromarray(data.camera()),
        rgba,
        Image.new("RGB", (7, 3000)),
    ]
    want = processor(images=photos, return_tensors="np")["pixel_values"]
    got = facts.pixels(photos)
    assert got.shape == want.shape and got.dtype == np.float32
    assert np.abs(got - want).max() < 1e-5
