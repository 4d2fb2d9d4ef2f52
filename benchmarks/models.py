"""The benchmark's models: CLIP ViT-B/32 or ViT-L/14 and BLIP-base, real architectures, random weights.

No hub: the weights are random (seeded), the CLIP tokenizer is CLIP's real BPE (open_clip's bundled
vocabulary) and the image processors have the real settings, so every approach loads the very same folder
(or its ONNX export) and pays exactly the compute of the real model. BLIP's tokenizer is a BERT WordPiece
tokenizer over a generated vocabulary of BLIP-base's size (BERT's special tokens at BERT's ids, "[DEC]"
and "[ENC]" after them as in BLIP, whole filler words elsewhere, so one generated token is one word).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.models.standins import CLIP_MEAN, CLIP_STD, clip_bpe_vocab


@dataclass(frozen=True)
class Architecture:
    """The shapes of one OpenAI CLIP checkpoint (from its config.json on the hub)."""

    name: str
    vision_width: int
    vision_layers: int
    vision_heads: int
    patch: int
    text_width: int
    text_layers: int
    text_heads: int
    projection: int
    image_size: int = 224

    @property
    def label(self) -> str:
        """The label the benchmark configures in CLIP_MODELS (and the ONNX export folder's name)."""
        return f"bench-{self.name}"


ARCHITECTURES = {
    "vit-b-32": Architecture("vit-b-32", 768, 12, 12, 32, 512, 12, 8, 512),
    "vit-l-14": Architecture("vit-l-14", 1024, 24, 16, 14, 768, 12, 12, 768),
}
"""openai/clip-vit-base-patch32 and openai/clip-vit-large-patch14 shapes."""

MARKER = "bench-model.json"
"""Written last: its presence means the folder is complete."""

BLIP_BASE = "blip-base"
"""The BLIP folder's name under <out>/models: Salesforce/blip-image-captioning-base's shapes."""

BLIP_SPECIAL_IDS = {"[PAD]": 0, "[UNK]": 100, "[CLS]": 101, "[SEP]": 102, "[MASK]": 103, "[DEC]": 30522}
"""BERT's special tokens at bert-base-uncased's ids and BLIP's decoder prompt after BERT's vocabulary: the
ids BlipConfig's text defaults use (pad 0, sep 102 ends a caption, bos 30522)."""


def clip_config(arch: Architecture) -> Any:
    """A transformers CLIPConfig with the checkpoint's shapes (quick_gelu, 77 tokens, 49408 vocab)."""
    from transformers import CLIPConfig

    return CLIPConfig(
        text_config={
            "vocab_size": 49408,
            "hidden_size": arch.text_width,
            "intermediate_size": 4 * arch.text_width,
            "num_hidden_layers": arch.text_layers,
            "num_attention_heads": arch.text_heads,
            "max_position_embeddings": 77,
            "hidden_act": "quick_gelu",
            "bos_token_id": 49406,
            "eos_token_id": 49407,
            "pad_token_id": 49407,
        },
        vision_config={
            "hidden_size": arch.vision_width,
            "intermediate_size": 4 * arch.vision_width,
            "num_hidden_layers": arch.vision_layers,
            "num_attention_heads": arch.vision_heads,
            "image_size": arch.image_size,
            "patch_size": arch.patch,
            "hidden_act": "quick_gelu",
        },
        projection_dim=arch.projection,
    )


def ensure_model(arch: Architecture, models_dir: Path, seed: int = 0) -> Path:
    """The `save_pretrained` folder of `arch` under `models_dir`, built once (seeded random weights)."""
    return _ensure(models_dir / arch.name, lambda staging: build_clip_folder(arch, staging, seed))


def ensure_blip(models_dir: Path, seed: int = 0) -> Path:
    """The BLIP-base folder under `models_dir` (for CAPTION_MODEL_NAME), built once, seeded random weights."""
    return _ensure(models_dir / BLIP_BASE, lambda staging: build_blip_folder(staging, seed))


def _ensure(out: Path, build: Callable[[Path], None]) -> Path:
    """`out`, built by `build(staging folder)` unless its marker is there; renamed into place when done."""
    if (out / MARKER).is_file():
        return out
    models_dir = out.parent
    models_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=models_dir))
    try:
        build(staging)
        shutil.rmtree(out, ignore_errors=True)
        staging.rename(out)  # a half-written model is never mistaken for a complete one
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def build_clip_folder(arch: Architecture, out: Path, seed: int = 0) -> None:
    """Write a transformers CLIPModel of `arch` (random weights), its tokenizer and processor into `out`."""
    import torch
    from transformers import CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    torch.manual_seed(seed)
    CLIPModel(clip_config(arch)).eval().save_pretrained(out)
    vocab, merges = clip_bpe_vocab()
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)  # type: ignore[arg-type]
    processor = CLIPImageProcessor(
        size={"shortest_edge": arch.image_size},
        crop_size={"height": arch.image_size, "width": arch.image_size},
        image_mean=list(CLIP_MEAN),
        image_std=list(CLIP_STD),
        resample=3,
    )
    CLIPProcessor(image_processor=processor, tokenizer=tokenizer).save_pretrained(out)
    (out / MARKER).write_text(json.dumps({"architecture": arch.name, "seed": seed}), encoding="utf-8")


def build_blip_folder(out: Path, seed: int = 0) -> None:
    """Write BlipForConditionalGeneration(BlipConfig()) (random weights), its processor and tokenizer."""
    import torch
    from transformers import (
        BertTokenizer,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
    )

    config = BlipConfig()  # BLIP-base: ViT-B/16 at 384 px, 12-layer BERT decoder with cross-attention
    text: Any = config.text_config
    text.eos_token_id = text.sep_token_id  # as the captioner's generate ends captions: at [SEP]
    vocab = _blip_vocab(int(text.vocab_size))
    for token, index in BLIP_SPECIAL_IDS.items():
        assert vocab[index] == token, (token, index)
    (out / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizer(vocab=str(out / "vocab.txt"), bos_token="[DEC]")
    tokenizer.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    torch.manual_seed(seed)
    BlipForConditionalGeneration(config).eval().save_pretrained(out)
    processor = BlipImageProcessor()  # BLIP's settings: 384x384 bicubic, OpenAI CLIP mean/std
    BlipProcessor(image_processor=processor, tokenizer=tokenizer).save_pretrained(out)
    (out / MARKER).write_text(json.dumps({"architecture": BLIP_BASE, "seed": seed}), encoding="utf-8")


def _blip_vocab(size: int) -> list[str]:
    """`size` tokens: the specials at their ids, "[ENC]" last, distinct lower-case filler words elsewhere."""
    vocab = [f"w{i}" for i in range(size)]
    for token, index in BLIP_SPECIAL_IDS.items():
        vocab[index] = token
    vocab[size - 1] = "[ENC]"
    return vocab


@dataclass(frozen=True)
class BenchModel:
    """The CLIP model every approach runs: its label, its transformers folder and its ONNX exports."""

    label: str
    model_dir: Path
    models_dir: Path
    """MINDSIGHT_MODELS_DIR: where `mindsight models export` puts onnx/<label>[-int8]."""
    dim: int

    @classmethod
    def from_folder(cls, label: str, model_dir: Path, models_dir: Path) -> BenchModel:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
        return cls(label, model_dir.resolve(), models_dir.resolve(), int(config["projection_dim"]))

    def env(self) -> dict[str, str]:
        """The settings that make `mindsight` processes serve this model, offline."""
        return {
            "CLIP_MODELS": f"{self.label}={self.model_dir}",
            "PROCESSING_DEFAULT_MODEL": self.label,
            "PROCESSING_EMBEDDING_DIM": str(self.dim),
            "CLIP_MODEL_DIMS": "",
            "MINDSIGHT_MODELS_DIR": str(self.models_dir),
            "MINDSIGHT_OFFLINE": "1",
        }
