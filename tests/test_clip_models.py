"""CLIP backends through the production loader: tiny random models of the real architectures on disk."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from open_clip.transform import PreprocessCfg, image_transform_v2
from PIL import Image
from skimage import data

from shared.errors import ConfigError
from shared.models.clip.backbone import ClipBackbone
from shared.models.clip.openclip_backend import OpenClip, transform_from_open_clip_cfg
from shared.models.clip.preprocess import preprocess_images
from shared.models.clip.registry import ClipFamily, ClipModel, detect_family, load_clip_models
from shared.models.clip.transformers_backend import TransformersClip, transform_from_hf_processor
from shared.settings import Settings
from tests.fixtures.clip_models import TINY_CLIP_DIM

TEXTS = ["a photo of an astronaut", "a dog!", "", "an extremely " + "long " * 80 + "caption"]


@pytest.fixture(scope="module")
def photos() -> list[Image.Image]:
    astronaut = Image.fromarray(data.astronaut())
    return [
        astronaut,
        astronaut.resize((301, 225)),
        Image.fromarray(data.chelsea()),
        astronaut.crop((0, 0, 90, 400)),
    ]


def backbone(model: ClipModel) -> ClipBackbone:
    return model.image.backbone  # type: ignore[attr-defined]


def test_both_families_load_from_env(
    make_settings: Callable[..., Settings], tiny_clip_env: dict[str, str]
) -> None:
    settings = make_settings(**tiny_clip_env)
    models = load_clip_models(settings.clip, settings.store, device="cpu")
    assert list(models) == ["tiny-hf", "tiny-oc"]
    assert (
        models["tiny-hf"].family is ClipFamily.TRANSFORMERS
        and models["tiny-oc"].family is ClipFamily.OPEN_CLIP
    )
    for model in models.values():
        assert model.dim == model.image.dim == model.text.dim == TINY_CLIP_DIM
        assert model.image.loaded and model.text.loaded
        assert model.image.image_size == 32  # decoders may scale photos down to this shorter side
        assert model.runtime_info.runtime == "torch" and model.runtime_info.device == "cpu"
        assert model.runtime_info.extra["family"] == model.family


def test_outputs_are_normalised_float32_of_dim(tiny_clip_models: dict[str, ClipModel], photos: list) -> None:
    for model in tiny_clip_models.values():
        vectors = model.image.predict(photos) + model.text.predict(TEXTS)
        for v in vectors:
            assert v.dtype == np.float32 and v.shape == (TINY_CLIP_DIM,)
            assert abs(float(np.linalg.norm(v)) - 1.0) < 1e-5
        assert len({v.tobytes() for v in vectors}) == len(vectors)  # no input collapses onto another


def test_same_input_same_vector_and_batch_equals_single(
    tiny_clip_models: dict[str, ClipModel], photos: list
) -> None:
    for model in tiny_clip_models.values():
        batch = model.image.predict(photos)
        assert np.array_equal(model.image.predict(photos[:1])[0], model.image.predict(photos[:1])[0])
        for image, vector in zip(photos, batch, strict=True):
            np.testing.assert_allclose(model.image.predict([image])[0], vector, atol=1e-5)
        texts = model.text.predict(TEXTS)
        for text, vector in zip(TEXTS, texts, strict=True):
            np.testing.assert_allclose(model.text.predict([text])[0], vector, atol=1e-5)


def test_hf_preprocessing_equals_clip_processor(tiny_transformers_clip_dir: Path, photos: list) -> None:
    from transformers import CLIPImageProcessor, CLIPProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    # Full-size OpenAI settings (224) on real photos, including an odd crop offset (301x225 -> 299x224).
    reference = CLIPImageProcessorPil()
    ours = preprocess_images(photos, transform_from_hf_processor(reference))
    for image, pixels in zip(photos, ours, strict=True):
        expected = reference(images=image, return_tensors="np")["pixel_values"][0]
        np.testing.assert_allclose(pixels, expected, atol=1e-5)
    # The saved processor of the tiny model, loaded as users load it (transformers 5 defaults to its
    # torchvision backend, whose uint8 bicubic differs from PIL's by at most one level on a few pixels).
    processor = CLIPProcessor.from_pretrained(tiny_transformers_clip_dir)
    clip = TransformersClip(str(tiny_transformers_clip_dir), "cpu", local_files_only=True)
    clip.load()
    ours = clip.preprocess(photos)
    expected = processor(images=photos, return_tensors="np")["pixel_values"]
    assert isinstance(processor.image_processor, CLIPImageProcessor | CLIPImageProcessorPil)
    one_level = 1 / 255 / min(processor.image_processor.image_std) + 1e-5
    assert np.abs(ours - expected).max() <= one_level
    assert np.mean(np.abs(ours - expected) < 1e-5) > 0.9


def test_open_clip_preprocessing_equals_its_transform(
    tiny_clip_models: dict[str, ClipModel], photos: list
) -> None:
    clip = backbone(tiny_clip_models["tiny-oc"])
    for size in (32, 224):
        cfg = dict(open_clip.get_model_preprocess_cfg(clip._model), size=size)  # type: ignore[attr-defined]
        reference = image_transform_v2(PreprocessCfg(**cfg), is_train=False)
        ours = preprocess_images(photos, transform_from_open_clip_cfg(cfg))
        for image, pixels in zip(photos, ours, strict=True):
            np.testing.assert_allclose(pixels, reference(image).numpy(), atol=1e-5)


def test_hf_tokenizer_fixture_is_real_clip_bpe(tiny_clip_models: dict[str, ClipModel]) -> None:
    hf, oc = backbone(tiny_clip_models["tiny-hf"]), backbone(tiny_clip_models["tiny-oc"])
    a, b = hf.tokenize(TEXTS), oc.tokenize(TEXTS)
    assert np.array_equal(a.lengths, b.lengths)
    for row_a, row_b, n in zip(a.ids, b.ids, a.lengths, strict=True):
        assert np.array_equal(row_a[:n], row_b[:n])  # padding differs: EOT (transformers) vs 0 (open_clip)
    assert a.ids[0, 0] == 49406 and a.ids[0, a.lengths[0] - 1] == 49407
    assert a.lengths[3] == 77 and a.ids[3, 76] == 49407  # the long caption is cut, EOT kept


def test_hf_truncated_text_tower_equals_full_forward(tiny_clip_models: dict[str, ClipModel]) -> None:
    clip = backbone(tiny_clip_models["tiny-hf"])
    tokens = clip.tokenize(TEXTS[:3])
    assert tokens.needed < 10  # the short texts really are run on a fraction of the 77 positions
    model = clip._model  # type: ignore[attr-defined]
    with torch.inference_mode():
        out = model.get_text_features(
            input_ids=torch.from_numpy(tokens.ids),
            attention_mask=torch.from_numpy((np.arange(77) < tokens.lengths[:, None]).astype(np.int64)),
        )
    full = torch.nn.functional.normalize(getattr(out, "pooler_output", out), dim=-1).numpy()
    np.testing.assert_allclose(clip.encode_tokens(tokens), full, atol=1e-5)


def test_open_clip_truncated_text_tower_equals_full_forward(tiny_clip_models: dict[str, ClipModel]) -> None:
    clip = backbone(tiny_clip_models["tiny-oc"])
    assert isinstance(clip, OpenClip) and clip._tower is not None
    tokens = clip.tokenize(TEXTS[:3])
    assert tokens.ids.shape[1] == 77 and tokens.needed < 10
    with torch.inference_mode():
        full = clip._model.encode_text(torch.from_numpy(tokens.ids), normalize=True).numpy()
    np.testing.assert_allclose(clip.encode_tokens(tokens), full, atol=1e-5)


def test_long_text_is_truncated_not_refused(tiny_clip_models: dict[str, ClipModel]) -> None:
    for model in tiny_clip_models.values():
        a, b = model.text.predict(["word " * 100, "word " * 300])
        np.testing.assert_allclose(a, b, atol=1e-6)  # both cut to the same 77 tokens


def test_max_text_tokens_setting_caps_context(
    make_settings: Callable[..., Settings], tiny_clip_env: dict[str, str]
) -> None:
    settings = make_settings(**tiny_clip_env, MINDSIGHT_MAX_TEXT_TOKENS="16")
    models = load_clip_models(settings.clip, settings.store, device="cpu")
    for model in models.values():
        tokens = backbone(model).tokenize(["word " * 50])
        assert tokens.ids.shape == (1, 16) and tokens.ids[0, 15] == 49407


def test_dim_mismatch_is_a_config_error(
    make_settings: Callable[..., Settings], tiny_clip_env: dict[str, str]
) -> None:
    settings = make_settings(**{**tiny_clip_env, "PROCESSING_EMBEDDING_DIM": "768"})
    with pytest.raises(
        ConfigError, match=r"'tiny-hf'.* produces 32-d vectors but PROCESSING_EMBEDDING_DIM=768"
    ):
        load_clip_models(settings.clip, settings.store, device="cpu")
    settings = make_settings(
        **{**tiny_clip_env, "PROCESSING_EMBEDDING_DIM": "768", "CLIP_MODEL_DIMS": "tiny-hf=32"}
    )
    with pytest.raises(
        ConfigError, match=r"'tiny-oc'.*PROCESSING_EMBEDDING_DIM=768; set CLIP_MODEL_DIMS=tiny-oc=32"
    ):
        load_clip_models(settings.clip, settings.store, device="cpu")


@pytest.mark.parametrize(
    "source",
    [
        "./no-such-model",
        "/nonexistent/clip",
        "openai/clip-vit-base-patch32",
        "ViT-B-32/laion2b_s34b_b79k",
        "hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
    ],
)
def test_missing_model_is_a_config_error_naming_the_fix(
    make_settings: Callable[..., Settings], source: str
) -> None:
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE
    settings = make_settings(CLIP_MODELS=f"m={source}", MINDSIGHT_OFFLINE="1")
    with pytest.raises(ConfigError) as info:
        load_clip_models(settings.clip, settings.store, device="cpu")
    message = str(info.value)
    assert source in message and "mindsight models download" in message and "MINDSIGHT_MODELS_DIR" in message
    assert "not found" in message or "offline mode" in message
    assert before == constants.HF_HUB_OFFLINE  # the offline switch is scoped to the load


def test_sources_resolve_under_models_dir(
    make_settings: Callable[..., Settings], tiny_clip_env: dict[str, str], tmp_path: Path
) -> None:
    models_dir = tmp_path / "store"
    hf_dir, oc_dir = (Path(p.split("=", 1)[1]) for p in tiny_clip_env["CLIP_MODELS"].split(","))
    shutil.copytree(hf_dir, models_dir / "clip-vit-tiny")
    shutil.copytree(oc_dir, models_dir / "laion" / "tiny-oc")
    settings = make_settings(
        **{
            **tiny_clip_env,
            "CLIP_MODELS": "a=clip-vit-tiny,b=laion/tiny-oc",
            "MINDSIGHT_MODELS_DIR": str(models_dir),
        }
    )
    models = load_clip_models(settings.clip, settings.store, device="cpu")
    assert (models["a"].family, models["b"].family) == (ClipFamily.TRANSFORMERS, ClipFamily.OPEN_CLIP)
    assert models["a"].source == "clip-vit-tiny"


def test_open_clip_checkpoint_file_with_model_name(
    make_settings: Callable[..., Settings], tiny_clip_env: dict[str, str], tmp_path: Path
) -> None:
    oc_dir = Path(tiny_clip_env["CLIP_MODELS"].split("tiny-oc=", 1)[1])
    config = json.loads((oc_dir / "open_clip_config.json").read_text())
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "mindsight-tiny-test.json").write_text(json.dumps(config["model_cfg"]))
    open_clip.add_model_config(tmp_path / "cfg")  # an architecture name open_clip knows, like ViT-B-32
    source = f"mindsight-tiny-test:{oc_dir / 'open_clip_model.safetensors'}"
    assert detect_family(source) is ClipFamily.OPEN_CLIP
    settings = make_settings(**{**tiny_clip_env, "CLIP_MODELS": f"file={source},dir={oc_dir}"})
    models = load_clip_models(settings.clip, settings.store, device="cpu")
    texts = ["a cat", "a dog"]
    np.testing.assert_allclose(
        models["file"].text.predict(texts), models["dir"].text.predict(texts), atol=1e-6
    )
    bad = make_settings(**{**tiny_clip_env, "CLIP_MODELS": "x=mindsight-tiny-test:/nope/weights.bin"})
    with pytest.raises(ConfigError, match="not found.*mindsight models download"):
        load_clip_models(bad.clip, bad.store, device="cpu")


@pytest.mark.parametrize(
    ("source", "family"),
    [
        ("hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K", ClipFamily.OPEN_CLIP),
        ("local-dir:/srv/models/oc", ClipFamily.OPEN_CLIP),
        ("ViT-B-32/laion2b_s34b_b79k", ClipFamily.OPEN_CLIP),
        ("ViT-B-32:laion2b_s34b_b79k", ClipFamily.OPEN_CLIP),
        ("ViT-L-14-quickgelu:/srv/ckpt.pt", ClipFamily.OPEN_CLIP),
        ("openai/clip-vit-large-patch14", ClipFamily.TRANSFORMERS),
        ("laion/CLIP-ViT-H-14-laion2B-s32B-b79K", ClipFamily.TRANSFORMERS),
        ("clip-vit-large-patch14", ClipFamily.TRANSFORMERS),
    ],
)
def test_detect_family_table(source: str, family: ClipFamily) -> None:
    assert detect_family(source) is family


def test_detect_family_of_folders(tiny_clip_env: dict[str, str], tmp_path: Path) -> None:
    hf_dir, oc_dir = (Path(p.split("=", 1)[1]) for p in tiny_clip_env["CLIP_MODELS"].split(","))
    assert detect_family(str(hf_dir)) is ClipFamily.TRANSFORMERS
    assert detect_family(oc_dir.name, models_dir=oc_dir.parent) is ClipFamily.OPEN_CLIP
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text('{"model_type": "bert"}')
    (tmp_path / "empty").mkdir()
    (tmp_path / "ckpt.pt").write_bytes(b"")
    with pytest.raises(ConfigError, match="not a CLIP model"):
        detect_family(str(tmp_path / "bert"))
    with pytest.raises(ConfigError, match="neither"):
        detect_family(str(tmp_path / "empty"))
    with pytest.raises(ConfigError, match="ViT-B-32:"):
        detect_family(str(tmp_path / "ckpt.pt"))
    with pytest.raises(ConfigError, match="not found"):
        detect_family("./missing-model")


def test_open_clip_folder_without_weights_is_refused(
    make_settings: Callable[..., Settings], tiny_clip_env: dict[str, str], tmp_path: Path
) -> None:
    oc_dir = Path(tiny_clip_env["CLIP_MODELS"].split("tiny-oc=", 1)[1])
    shutil.copy(oc_dir / "open_clip_config.json", tmp_path / "open_clip_config.json")
    settings = make_settings(**{**tiny_clip_env, "CLIP_MODELS": f"x={tmp_path}"})
    with pytest.raises(ConfigError, match="no weights"):  # open_clip alone would load random weights
        load_clip_models(settings.clip, settings.store, device="cpu")


def test_concurrent_text_requests(tiny_clip_models: dict[str, ClipModel]) -> None:
    # The embed API serves requests from a thread pool; one tokenizer instance must survive that.
    texts = [f"photo number {i} of a {'very ' * (i % 30)}red car" for i in range(64)]
    for model in tiny_clip_models.values():
        expected = model.text.predict(texts)
        chunks = [texts[i : i + 4] for i in range(0, 64, 4)]
        with ThreadPoolExecutor(max_workers=8) as pool:
            got = list(pool.map(model.text.predict, chunks))
        np.testing.assert_allclose(np.concatenate(got), np.stack(expected), atol=1e-5)


def test_text_embedder_rejects_non_strings(tiny_clip_models: dict[str, ClipModel]) -> None:
    with pytest.raises(TypeError, match="strings"):
        tiny_clip_models["tiny-hf"].text.predict([None])  # type: ignore[list-item]
