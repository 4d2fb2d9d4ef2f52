"""`ModelSource`: one parse of a source string, read by the loaders, download, ls, export and dev run."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from services.dev_stack.model_plan import caption_on_disk, clip_on_disk
from shared.errors import ConfigError
from shared.models.store.download import is_present, plan
from shared.models.store.source import (
    OPEN_CLIP_WEIGHT_FILES,
    ClipFamily,
    parse_source,
)
from shared.settings import Settings
from tests.fixtures.model_hubs import cache_repo

T, OC = ClipFamily.TRANSFORMERS, ClipFamily.OPEN_CLIP
VIT_L = "openai/clip-vit-large-patch14"
LAION = "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"
TAG = "laion2b_s34b_b79k"


@pytest.mark.parametrize(
    ("raw", "family", "fetch", "repo", "name", "pretrained"),
    [
        (VIT_L, T, "hub", VIT_L, None, None),
        (f"hf-hub:{LAION}", OC, "hub", LAION, None, None),
        (f"ViT-B-32/{TAG}", OC, "open_clip", None, "ViT-B-32", TAG),
        (f"ViT-B-32:{TAG}", OC, "open_clip", None, "ViT-B-32", TAG),
        ("ViT-L-14-quickgelu:/srv/ckpt.pt", OC, "none", None, "ViT-L-14-quickgelu", "/srv/ckpt.pt"),
        ("local-dir:/srv/models/oc", OC, "none", None, None, None),
        ("clip-vit-large-patch14", T, "hub", "clip-vit-large-patch14", None, None),
    ],
)
def test_the_source_forms(
    raw: str, family: ClipFamily, fetch: str, repo: str | None, name: str | None, pretrained: str | None,
    tmp_path: Path,
) -> None:  # fmt: skip
    parsed = parse_source(raw, tmp_path)
    assert (parsed.family, parsed.fetch, parsed.hub_repo) == (family, fetch, repo)
    assert (parsed.open_clip_name, parsed.open_clip_pretrained) == (name, pretrained)
    if fetch == "hub":
        assert parsed.target == tmp_path / raw  # where `models download` puts it and `resolve_local` looks


def test_a_missing_path_has_no_family_and_names_both_places(tmp_path: Path) -> None:
    parsed = parse_source("./no/such/model", tmp_path)
    assert parsed.family is None and parsed.fetch == "none" and not parsed.on_disk()
    with pytest.raises(ConfigError, match="not found.*and .*mindsight models download"):
        parsed.require_local("CLIP model folder", tmp_path)


def test_caption_sources_are_never_read_as_open_clip(tmp_path: Path) -> None:
    parsed = parse_source("ViT-B-32/laion2b_s34b_b79k", tmp_path, "caption")
    assert parsed.family is ClipFamily.TRANSFORMERS and parsed.hub_repo == "ViT-B-32/laion2b_s34b_b79k"


def test_a_folder_under_the_models_dir_wins_over_the_hub(tmp_path: Path) -> None:
    folder = tmp_path / "openai" / "clip-vit-base-patch32"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "clip"}))
    parsed = parse_source("openai/clip-vit-base-patch32", tmp_path)
    assert parsed.local == folder and parsed.fetch == "none" and not parsed.in_store()  # no weights yet
    (folder / "model.safetensors").write_bytes(b"")
    assert parse_source("openai/clip-vit-base-patch32", tmp_path).in_store()


def test_exports_present_are_part_of_the_parse(tmp_path: Path) -> None:
    (tmp_path / "onnx" / "vitl-int8").mkdir(parents=True)
    (tmp_path / "onnx" / "vitl-int8" / "mindsight_onnx.json").write_text("{}")
    parsed = parse_source("openai/clip-vit-large-patch14", tmp_path, label="vitl")
    assert dict(parsed.exports) == {"int8": tmp_path / "onnx" / "vitl-int8"}


@pytest.mark.parametrize("weights", OPEN_CLIP_WEIGHT_FILES)
def test_every_open_clip_weight_file_counts_everywhere(
    weights: str, make_settings: Callable[..., Settings], empty_hub_cache: Path, tmp_path: Path
) -> None:
    """`dev run` and `models download` agree with the loader on which files make an open_clip repo whole
    (dev run used to miss `.pth` and download took any *.safetensors)."""
    settings = make_settings(CLIP_MODELS="oc=hf-hub:org/oc-repo", PROCESSING_DEFAULT_MODEL="oc")
    assert not clip_on_disk("hf-hub:org/oc-repo", settings)
    cache_repo(empty_hub_cache, "org/oc-repo", ["open_clip_config.json", weights])
    assert clip_on_disk("hf-hub:org/oc-repo", settings)
    folder = settings.store.models_dir / "hf-hub:org/oc-repo"
    folder.mkdir(parents=True)
    (folder / "open_clip_config.json").write_text("{}")
    (folder / "adapter.safetensors").write_bytes(b"")  # not a weight file open_clip loads
    (wanted,) = plan(settings, {"clip"})
    assert not is_present(wanted)
    (folder / weights).write_bytes(b"")
    (wanted,) = plan(settings, {"clip"})
    assert is_present(wanted) and wanted.how == "none"


def test_download_knows_open_clip_names_the_loader_knows(
    make_settings: Callable[..., Settings], tiny_clip_env: dict[str, str], tmp_path: Path
) -> None:
    """An architecture registered at run time is an open_clip checkpoint for download as for the loader."""
    import open_clip

    oc_dir = Path(tiny_clip_env["CLIP_MODELS"].split("tiny-oc=", 1)[1])
    config = json.loads((oc_dir / "open_clip_config.json").read_text())
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "mindsight-src-test.json").write_text(json.dumps(config["model_cfg"]))
    open_clip.add_model_config(tmp_path / "cfg")
    source = f"mindsight-src-test:{oc_dir / 'open_clip_model.safetensors'}"
    settings = make_settings(CLIP_MODELS=f"file={source}", PROCESSING_DEFAULT_MODEL="file")
    (wanted,) = plan(settings, {"clip"})
    assert (wanted.how, wanted.target) == ("none", oc_dir / "open_clip_model.safetensors")
    assert is_present(wanted)


def test_caption_on_disk_follows_the_parse(
    make_settings: Callable[..., Settings], empty_hub_cache: Path
) -> None:
    settings = make_settings()
    assert not caption_on_disk("Salesforce/blip-image-captioning-base", settings)
    cache_repo(empty_hub_cache, "Salesforce/blip-image-captioning-base", ["config.json", "model.safetensors"])
    assert caption_on_disk("Salesforce/blip-image-captioning-base", settings)
    assert not caption_on_disk("  ", settings)
