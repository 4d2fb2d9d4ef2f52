"""Tiny RANDOM models of the real architectures (two CLIPs, one BLIP), built offline and saved like downloads.

Tests load them through the production loading code; `mindsight dev run` falls back to them when the
configured models are not on disk. Their outputs are meaningless: they exist so that every code path runs
without a model hub. The CLIPs use the real CLIP BPE tokenizer (open_clip's bundled vocabulary, 49408
tokens, context 77) and the BLIP a real BERT tokenizer, so text handling is exercised for real; only the
widths and depths are tiny. Building all three takes a few seconds on one CPU core.
"""

from __future__ import annotations

import gzip
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

TINY_CLIP_DIM = 32
"""Embedding size of both tiny CLIPs, so one PROCESSING_EMBEDDING_DIM covers them."""

TINY_IMAGE_SIZE = 32

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

BLIP_SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"]
"""BERT's specials plus BLIP's decoder prompt [DEC]; their ids are wired into the text config below."""

BLIP_WORDS = [
    "a", "an", "the", "cat", "dog", "on", "beach", "in", "of", "with", "sitting", "standing", "man",
    "woman", "photo", "picture", "red", "blue", "green", "black", "white", "grass", "sky", "water", "tree",
    "house", "car", "street", "table",
]  # fmt: skip
"""Whole words only, so one generated token is one word of the decoded caption."""

TINY_BLIP_IMAGE_SIZE = 32

STANDIN_VERSION = "1"
"""Bumped whenever a builder below changes, so cached stand-ins under ./var are rebuilt."""


def clip_bpe_vocab() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """CLIP's vocabulary and merges, rebuilt from open_clip's bundled BPE file as OpenAI built them."""
    from open_clip.tokenizer import bytes_to_unicode, default_bpe

    with gzip.open(default_bpe()) as f:
        lines = f.read().decode("utf-8").split("\n")
    merges = [(a, b) for a, b in (line.split() for line in lines[1 : 49152 - 256 - 2 + 1])]
    byte_chars = list(bytes_to_unicode().values())
    tokens = byte_chars + [c + "</w>" for c in byte_chars] + [a + b for a, b in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}, merges


def build_tiny_transformers_clip(target: Path, seed: int = 0) -> Path:
    """Save a tiny random transformers CLIPModel with tokenizer and processor under `target`."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    target.mkdir(parents=True, exist_ok=True)
    config = CLIPConfig(
        text_config={
            "vocab_size": 49408, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 2, "max_position_embeddings": 77, "bos_token_id": 49406,
            "eos_token_id": 49407, "pad_token_id": 49407,
        },
        vision_config={
            "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
            "image_size": TINY_IMAGE_SIZE, "patch_size": 8,
        },
        projection_dim=TINY_CLIP_DIM,
    )  # fmt: skip
    torch.manual_seed(seed)
    CLIPModel(config).eval().save_pretrained(target)
    vocab, merges = clip_bpe_vocab()
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)  # type: ignore[arg-type]
    processor = CLIPImageProcessor(
        size={"shortest_edge": TINY_IMAGE_SIZE},
        crop_size={"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE},
        image_mean=list(CLIP_MEAN),
        image_std=list(CLIP_STD),
        resample=3,
    )
    CLIPProcessor(image_processor=processor, tokenizer=tokenizer).save_pretrained(target)
    return target


def build_tiny_open_clip(target: Path, seed: int = 0) -> Path:
    """Save a tiny random open_clip CLIP in hf-hub layout (open_clip_config.json + safetensors)."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    target.mkdir(parents=True, exist_ok=True)
    model_cfg = {
        "embed_dim": TINY_CLIP_DIM,
        "vision_cfg": {
            "image_size": TINY_IMAGE_SIZE,
            "layers": 2,
            "width": 32,
            "head_width": 16,
            "patch_size": 8,
        },
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
    }
    preprocess_cfg = {
        "mean": list(CLIP_MEAN),
        "std": list(CLIP_STD),
        "interpolation": "bicubic",
        "resize_mode": "shortest",
    }
    torch.manual_seed(seed)
    model = open_clip.CLIP(**model_cfg).eval()
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(target / "open_clip_model.safetensors"))
    config = {"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg}
    (target / "open_clip_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return target


def build_tiny_blip(target: Path, seed: int = 0, silent: bool = False) -> Path:
    """Save a tiny random BlipForConditionalGeneration + BlipProcessor under `target`; returns it.

    `silent=True` makes the decoder end every caption at once ([SEP] first), i.e. an empty caption.
    """
    import torch
    from transformers import (
        BertTokenizer,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
    )

    target.mkdir(parents=True, exist_ok=True)
    vocab_file = target / "vocab.txt"
    vocab_file.write_text("\n".join(BLIP_SPECIAL_TOKENS + BLIP_WORDS) + "\n")
    tokenizer = BertTokenizer(vocab=str(vocab_file), bos_token="[DEC]")
    ids = {token: i for i, token in enumerate(BLIP_SPECIAL_TOKENS)}  # a token's id is its line in vocab.txt
    image_processor = BlipImageProcessor(size={"height": TINY_BLIP_IMAGE_SIZE, "width": TINY_BLIP_IMAGE_SIZE})
    # Weights of 0.2 (not BLIP's 0.02 / 1e-10) so that different photos give different captions.
    config = BlipConfig(
        text_config={
            "vocab_size": len(tokenizer), "hidden_size": 32, "encoder_hidden_size": 32,
            "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
            "max_position_embeddings": 64, "bos_token_id": ids["[DEC]"], "sep_token_id": ids["[SEP]"],
            "eos_token_id": ids["[SEP]"], "pad_token_id": ids["[PAD]"], "initializer_range": 0.2,
        },
        vision_config={
            "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
            "image_size": TINY_BLIP_IMAGE_SIZE, "patch_size": 8, "initializer_range": 0.2,
        },
        projection_dim=32,
        image_text_hidden_size=32,
        initializer_range=0.2,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = BlipForConditionalGeneration(config).eval()
    if silent:
        with torch.no_grad():
            model.text_decoder.cls.predictions.bias[ids["[SEP]"]] = 100.0
    model.save_pretrained(target)
    BlipProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(target)
    return target


@dataclass(frozen=True)
class StandinModels:
    """Folders of the three stand-ins, each loadable by the production loaders like a downloaded model."""

    transformers_clip: Path
    open_clip: Path
    blip: Path


def standin_paths(root: Path) -> StandinModels:
    """Where `ensure_standins(root)` puts each model."""
    return StandinModels(root / "clip-transformers", root / "clip-open_clip", root / "blip")


def ensure_standins(root: Path) -> StandinModels:
    """Build the stand-ins under `root` unless a complete build of this STANDIN_VERSION is already there.

    Built in a temporary sibling folder and renamed into place, so an interrupted build never leaves a
    half-written model behind, and a run that loses a race to build them uses the winner's.
    """
    root = Path(root)
    paths = standin_paths(root)
    if _complete(root):
        return paths
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # "Writing model shards" bars say nothing useful here
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
    try:
        built = standin_paths(staging)
        build_tiny_transformers_clip(built.transformers_clip)
        build_tiny_open_clip(built.open_clip)
        build_tiny_blip(built.blip)
        (staging / "README.txt").write_text(
            "Tiny RANDOM stand-in models built by mindsight (shared/models/standins.py). Their embeddings\n"
            "and captions are meaningless; delete this folder at will, it is rebuilt on demand.\n"
        )
        (staging / "STANDIN_VERSION").write_text(STANDIN_VERSION + "\n")
        staging.chmod(0o755)  # mkdtemp's 0700 would hide the models from other users of the checkout
        if _complete(root):
            return paths  # another run finished first: keep its build, which may be in use
        if root.exists():
            shutil.rmtree(root)  # an older version, or a folder someone emptied
        try:
            staging.rename(root)
        except OSError:
            if not _complete(root):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return paths


def _complete(root: Path) -> bool:
    stamp = root / "STANDIN_VERSION"
    return stamp.is_file() and stamp.read_text().strip() == STANDIN_VERSION
