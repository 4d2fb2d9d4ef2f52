"""Multilingual open_clip (XLM-RoBERTa text tower): load, embed and export through the production code.

The tiny model's tokenizer is a SentencePiece-style Unigram model trained here with `tokenizers` in
XLM-RoBERTa's layout (no PyPI package ships XLM-R's own sentencepiece.bpe.model); see the fixture.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from shared.models.clip.openclip_backend import OpenClip
from shared.models.clip.registry import ClipFamily, ClipModel
from shared.models.onnx.manifest import MANIFEST_NAME, read_manifest
from shared.settings import Settings
from tests.fixtures.clip_models import TINY_CLIP_DIM
from tests.fixtures.multilingual_clip import clip_loader, exported_clip_env, sample_photos

QUERIES = ["一只猫", "海边的日落", "a photo of a cat on the beach", "ein Foto einer Katze", "", "猫 " * 100]


@pytest.fixture(scope="module")
def xl_env(tiny_xlmr_open_clip_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The tiny XLM-R CLIP as label xl, exported once (fp32 and int8) into this env's models dir."""
    return exported_clip_env("xl", tiny_xlmr_open_clip_dir, tmp_path_factory.mktemp("models"))


@pytest.fixture
def load(make_settings: Callable[..., Settings], xl_env: dict[str, str]) -> Callable[..., ClipModel]:
    return clip_loader(make_settings, xl_env, "xl")


def test_loads_and_embeds_with_the_trained_context(load: Callable[..., ClipModel]) -> None:
    model = load(MINDSIGHT_CLIP_RUNTIME="torch")
    assert model.family is ClipFamily.OPEN_CLIP
    backbone = model.backbone
    assert isinstance(backbone, OpenClip)
    assert backbone.context_length == 77  # text_cfg's, not the 514 positions XLM-R reports
    for v in model.image.predict(sample_photos()) + model.text.predict(QUERIES):
        assert v.shape == (TINY_CLIP_DIM,) and abs(float(np.linalg.norm(v)) - 1.0) < 1e-5
    unk = backbone._tokenizer.tokenizer.unk_token_id
    tokens = backbone.tokenize(QUERIES[:4])
    assert all(unk not in row[:n] for row, n in zip(tokens.ids, tokens.lengths, strict=True))


def test_cut_text_forward_equals_open_clips_full_forward(load: Callable[..., ClipModel]) -> None:
    backbone = load(MINDSIGHT_CLIP_RUNTIME="torch").backbone
    assert isinstance(backbone, OpenClip)
    tokens = backbone.tokenize(QUERIES)
    with torch.inference_mode():
        full = backbone._model.encode_text(torch.from_numpy(tokens.ids), normalize=True).numpy()
    short = backbone.tokenize(QUERIES[:4])
    assert short.needed < short.ids.shape[1]
    np.testing.assert_allclose(backbone.encode_tokens(tokens), full, atol=1e-5)
    np.testing.assert_allclose(backbone.encode_tokens(short), full[:4], atol=1e-5)


def test_long_text_is_truncated_by_tokens_and_logged(
    load: Callable[..., ClipModel], caplog: pytest.LogCaptureFixture
) -> None:
    model = load(MINDSIGHT_CLIP_RUNTIME="torch")
    with caplog.at_level(logging.INFO, logger="shared.models.clip.backbone"):
        a, b = model.text.predict(["猫 " * 100, "猫 " * 120])
    np.testing.assert_allclose(a, b, atol=1e-6)
    messages = [r.getMessage() for r in caplog.records if "truncated" in r.getMessage()]
    assert len(messages) == 2 and "77-token context" in messages[0]


def test_export_manifest(xl_env: dict[str, str]) -> None:
    for suffix in ("", "-int8"):
        folder = Path(xl_env["MINDSIGHT_MODELS_DIR"]) / "onnx" / f"xl{suffix}"
        manifest = read_manifest(folder)
        checks = json.loads((folder / MANIFEST_NAME).read_text())["checks"]
        assert manifest.family == "open_clip" and manifest.context_length == 77
        assert manifest.tokenizer.pool == "masked" and manifest.tokenizer.clean == "open_clip_whitespace"
        assert (manifest.tokenizer.sot_id, manifest.tokenizer.eot_id, manifest.tokenizer.pad_id) == (0, 2, 1)
        assert checks["passed"] and checks["tokenizer_ids_equal"] and checks["preprocess_equal"]


@pytest.mark.parametrize(("precision", "floor"), [("fp32", 0.9999), ("int8", 0.99)])
def test_onnx_matches_torch(load: Callable[..., ClipModel], precision: str, floor: float) -> None:
    torch_model = load(MINDSIGHT_CLIP_RUNTIME="torch")
    onnx_model = load(MINDSIGHT_CLIP_RUNTIME="onnx", MINDSIGHT_CLIP_PRECISION=precision)
    assert onnx_model.family is ClipFamily.ONNX
    np.testing.assert_array_equal(
        onnx_model.backbone.tokenize(QUERIES).ids, torch_model.backbone.tokenize(QUERIES).ids
    )
    photos = sample_photos()
    pairs = [
        (onnx_model.image.predict(photos), torch_model.image.predict(photos)),
        (onnx_model.text.predict(QUERIES), torch_model.text.predict(QUERIES)),
        ([onnx_model.text.predict([q])[0] for q in QUERIES], torch_model.text.predict(QUERIES)),
    ]
    for ours, reference in pairs:
        cosines = np.array([float(x @ y) for x, y in zip(ours, reference, strict=True)])
        assert cosines.min() > floor, cosines
