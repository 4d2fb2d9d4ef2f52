"""Chinese-CLIP exported by `mindsight models export --int8`, served by ONNX Runtime, compared with torch."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from shared.models.clip.onnx_backend import OnnxClip
from shared.models.clip.registry import ClipFamily, ClipModel
from shared.models.onnx.manifest import MANIFEST_NAME, read_manifest
from shared.settings import Settings
from tests.fixtures.clip_models import TINY_CLIP_DIM
from tests.fixtures.multilingual_clip import clip_loader, exported_clip_env, sample_photos

QUERIES = ["一只猫", "海边的日落", "体育场内举办一场大型活动，观众很多。", "a cat 在海边", "", "猫" * 200]


@pytest.fixture(scope="module")
def cn_env(tiny_chinese_clip_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The tiny Chinese-CLIP as label cn, exported once (fp32 and int8) into this env's models dir."""
    return exported_clip_env("cn", tiny_chinese_clip_dir, tmp_path_factory.mktemp("models"))


@pytest.fixture
def load(make_settings: Callable[..., Settings], cn_env: dict[str, str]) -> Callable[..., ClipModel]:
    return clip_loader(make_settings, cn_env, "cn")


def _cosines(a: list[np.ndarray], b: list[np.ndarray]) -> np.ndarray:
    return np.array([float(x @ y) for x, y in zip(a, b, strict=True)])


def test_export_manifest_pools_cls_and_passed_its_checks(cn_env: dict[str, str]) -> None:
    for suffix in ("", "-int8"):
        folder = Path(cn_env["MINDSIGHT_MODELS_DIR"]) / "onnx" / f"cn{suffix}"
        manifest = read_manifest(folder)
        raw = json.loads((folder / MANIFEST_NAME).read_text())
        assert manifest.family == "transformers" and manifest.dim == TINY_CLIP_DIM
        assert manifest.tokenizer.pool == "masked" and manifest.tokenizer.clean == "none"
        assert manifest.context_length == 512  # BERT's; MINDSIGHT_MAX_TEXT_TOKENS caps it at run time
        assert raw["checks"]["passed"] and raw["checks"]["tokenizer_ids_equal"]
        assert raw["checks"]["texts"] >= 10  # the corpus includes Chinese texts


@pytest.mark.parametrize(("precision", "floor"), [("fp32", 0.9999), ("int8", 0.99)])
def test_onnx_matches_torch_on_photos_and_chinese_queries(
    load: Callable[..., ClipModel], precision: str, floor: float
) -> None:
    torch_model = load(MINDSIGHT_CLIP_RUNTIME="torch")
    onnx_model = load(MINDSIGHT_CLIP_RUNTIME="onnx", MINDSIGHT_CLIP_PRECISION=precision)
    assert onnx_model.family is ClipFamily.ONNX and onnx_model.runtime_info.precision == precision
    backbone = onnx_model.backbone
    assert isinstance(backbone, OnnxClip)
    np.testing.assert_array_equal(backbone.tokenize(QUERIES).ids, torch_model.backbone.tokenize(QUERIES).ids)
    photos = sample_photos()
    image = _cosines(onnx_model.image.predict(photos), torch_model.image.predict(photos))
    text = _cosines(onnx_model.text.predict(QUERIES), torch_model.text.predict(QUERIES))
    singles = [onnx_model.text.predict([q])[0] for q in QUERIES]
    one_by_one = _cosines(singles, torch_model.text.predict(QUERIES))
    assert image.min() > floor and text.min() > floor and one_by_one.min() > floor, (image, text, one_by_one)


def test_onnx_truncates_long_chinese_text_by_tokens_and_logs_it(
    load: Callable[..., ClipModel], caplog: pytest.LogCaptureFixture
) -> None:
    model = load(MINDSIGHT_CLIP_RUNTIME="onnx", MINDSIGHT_MAX_TEXT_TOKENS="16")
    with caplog.at_level(logging.INFO, logger="shared.models.clip.backbone"):
        long, cut = model.text.predict(["海边的日落" * 10, "海边的日落海边的日落海边的日落"[:14]])
    np.testing.assert_allclose(long, cut, atol=1e-5)  # 14 characters + [CLS] + [SEP] = the 16 tokens kept
    [message] = [r.getMessage() for r in caplog.records if "truncated" in r.getMessage()]
    assert "16-token context" in message and "52 tokens" in message
