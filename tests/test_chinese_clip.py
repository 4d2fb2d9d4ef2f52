"""Chinese-CLIP through the production loaders: a tiny random ChineseCLIPModel with a real BERT tokenizer."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from shared.errors import ConfigError
from shared.models.clip.preprocess import preprocess_images
from shared.models.clip.registry import ClipFamily, ClipModel, detect_family, load_clip_models
from shared.models.clip.transformers_backend import TransformersClip, transform_from_hf_processor
from shared.settings import Settings
from tests.fixtures.clip_models import TINY_CLIP_DIM

QUERIES = ["一只猫", "海边的日落", "体育场内举办一场大型活动，观众很多。", "a cat 在海边", "猫"]


@pytest.fixture(scope="module")
def cn_env(tiny_chinese_clip_dir: Path) -> dict[str, str]:
    return {
        "CLIP_MODELS": f"cn={tiny_chinese_clip_dir}",
        "PROCESSING_DEFAULT_MODEL": "cn",
        "PROCESSING_EMBEDDING_DIM": str(TINY_CLIP_DIM),
        "CLIP_MODEL_DIMS": "",
    }


@pytest.fixture
def cn_model(make_settings: Callable[..., Settings], cn_env: dict[str, str]) -> ClipModel:
    settings = make_settings(**cn_env)
    return load_clip_models(settings.clip, settings.store, device="cpu")["cn"]


def _clip(model: ClipModel) -> TransformersClip:
    backbone = model.backbone
    assert isinstance(backbone, TransformersClip)
    return backbone


def test_loads_offline_from_a_folder_with_both_towers(cn_model: ClipModel) -> None:
    assert cn_model.family is ClipFamily.TRANSFORMERS
    assert _clip(cn_model).kind is not None and _clip(cn_model).kind.model_type == "chinese_clip"  # type: ignore[union-attr]
    photos = [Image.fromarray(data.astronaut()), Image.fromarray(data.chelsea()).resize((120, 300))]
    vectors = cn_model.image.predict(photos) + cn_model.text.predict(QUERIES)
    for v in vectors:
        assert v.shape == (TINY_CLIP_DIM,) and v.dtype == np.float32
        assert abs(float(np.linalg.norm(v)) - 1.0) < 1e-5
    texts = np.stack(vectors[2:])
    assert np.abs(texts[0] - texts[1]).max() > 1e-3  # different Chinese queries, different vectors


def test_detect_family_of_a_chinese_clip_folder(tiny_chinese_clip_dir: Path, tmp_path: Path) -> None:
    assert detect_family(str(tiny_chinese_clip_dir)) is ClipFamily.TRANSFORMERS
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ConfigError, match=r"'bert' transformers model, not a CLIP model.*chinese_clip"):
        detect_family(str(bert))


def test_tokenizer_splits_chinese_per_character_without_unknowns(cn_model: ClipModel) -> None:
    clip = _clip(cn_model)
    tokens = clip.tokenize(QUERIES)
    unk = clip._tokenizer.unk_token_id
    for text, row, n in zip(QUERIES, tokens.ids, tokens.lengths, strict=True):
        assert unk not in row[:n].tolist(), text
    assert tokens.lengths[0] == 2 + 3  # [CLS] 一 只 猫 [SEP]: one token per character
    assert (
        tokens.ids[0, 0] == clip._tokenizer.cls_token_id and tokens.ids[0, 4] == clip._tokenizer.sep_token_id
    )


def test_cut_and_masked_text_forward_equals_full_padded_forward(cn_model: ClipModel) -> None:
    """The batch runs only up to its longest text; transformers' own padded forward is the reference."""
    clip = _clip(cn_model)
    tokenizer = clip._tokenizer
    enc = tokenizer(QUERIES, padding="max_length", max_length=clip.context_length, return_tensors="pt")
    with torch.inference_mode():
        out = clip._model.get_text_features(**enc)
    reference = torch.nn.functional.normalize(out.pooler_output, dim=-1).numpy()
    tokens = clip.tokenize(QUERIES)
    assert tokens.needed < clip.context_length
    np.testing.assert_allclose(clip.encode_tokens(tokens), reference, atol=1e-5)
    singles = np.stack([cn_model.text.predict([q])[0] for q in QUERIES])
    np.testing.assert_allclose(singles, reference, atol=1e-5)


def test_preprocessing_equals_chinese_clip_processor(tiny_chinese_clip_dir: Path) -> None:
    from transformers import ChineseCLIPProcessor
    from transformers.models.chinese_clip.image_processing_pil_chinese_clip import (
        ChineseCLIPImageProcessorPil,
    )

    photos = [Image.fromarray(data.astronaut()), Image.fromarray(data.coffee()).resize((301, 225))]
    # The class defaults (shortest edge 224, centre crop) and the square resize the OFA-Sys repos ship.
    saved = ChineseCLIPProcessor.from_pretrained(tiny_chinese_clip_dir).image_processor
    for reference in (ChineseCLIPImageProcessorPil(), ChineseCLIPImageProcessorPil(**saved.to_dict())):
        ours = preprocess_images(photos, transform_from_hf_processor(reference))
        expected = reference(images=photos, return_tensors="np")["pixel_values"]
        np.testing.assert_allclose(ours, expected, atol=1e-5)


def test_long_chinese_text_is_truncated_by_tokens_and_logged(
    cn_model: ClipModel, caplog: pytest.LogCaptureFixture
) -> None:
    clip = _clip(cn_model)
    long_text = "体育场内举办一场大型活动" * 20  # 240 characters, 240 tokens: past the 77-token context
    with caplog.at_level(logging.INFO, logger="shared.models.clip.backbone"):
        a, b, short = cn_model.text.predict([long_text, long_text + "观众很多", "一只猫"])
    np.testing.assert_allclose(a, b, atol=1e-6)  # both cut to the same first 77 tokens
    truncations = [r.getMessage() for r in caplog.records if "truncated" in r.getMessage()]
    assert len(truncations) == 2
    assert f"{clip.context_length}-token context" in truncations[0] and "242 tokens" in truncations[0]
    assert "240 characters" in truncations[0]
    assert not np.allclose(short, a)
