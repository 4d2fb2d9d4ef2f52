"""Hugging Face transformers CLIPs (`CLIPModel`, `ChineseCLIPModel`): image and text embedders over one model.

The architecture comes from the repo's config.json `model_type`, looked up in `hf_kinds.HF_CLIP_KINDS`.
Preprocessing is the numpy path of `clip.preprocess` built from the repo's image processor config; it
equals transformers' PIL-backend processor (the one the OpenAI weights were evaluated with). OpenAI CLIP's
text tower is causal and pooled at end-of-text; Chinese-CLIP's is a BERT pooled at [CLS] that must be told
which positions are padding: both run only up to the batch's longest text (exact for both).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

from shared.errors import ConfigError
from shared.models.base import l2_normalize
from shared.models.clip.backbone import ClipBackbone, ClipImageEmbedder, ClipTextEmbedder, TokenBatch
from shared.models.clip.hf_kinds import HfClipKind, TextTower, hf_clip_kind
from shared.models.clip.preprocess import ClipImageTransform
from shared.models.onnx.exportable import TOKENIZER_FILE
from shared.models.onnx.manifest import TokenizerSpec


class TransformersClip(ClipBackbone):
    """A transformers CLIP (any `HF_CLIP_KINDS` row) from a hub repo id or a `save_pretrained` folder."""

    family = "transformers"

    def __init__(
        self, source: str, device: str, *, max_tokens: int = 77, local_files_only: bool = False
    ) -> None:
        super().__init__(source, device, max_tokens=max_tokens)
        self.local_files_only = local_files_only
        self._model: Any = None
        self._tokenizer: Any = None
        self._text: _TextFeatures | None = None
        self.kind: HfClipKind | None = None
        self._pad_id = 0
        # Rust tokenizers fail with "Already borrowed" when one instance is used from two threads at once.
        self._tokenizer_lock = threading.Lock()

    def _load(self) -> None:
        import transformers
        from transformers import AutoConfig, AutoTokenizer

        kw: dict[str, Any] = {"local_files_only": self.local_files_only}
        self.kind = kind = hf_clip_kind(AutoConfig.from_pretrained(self.source, **kw).model_type, self.source)
        model_class, processor_class = _classes(kind)
        # transformers 5 renamed torch_dtype to dtype; fp32 always (fp16 checkpoints would be slow on CPU).
        dtype_key = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
        kw_model: dict[str, Any] = {**kw, dtype_key: torch.float32}
        model: Any = model_class.from_pretrained(self.source, **kw_model)
        self._model = model.eval().to(self.device)
        self._tokenizer = AutoTokenizer.from_pretrained(self.source, **kw)
        self._tokenizer.padding_side = "right"  # TokenBatch.lengths assumes padding after the text
        pad = self._tokenizer.pad_token_id
        self._pad_id = int(pad if pad is not None else 0)
        self.transform = transform_from_hf_processor(processor_class.from_pretrained(self.source, **kw))
        self._text = _TextFeatures(self._model, self._mask_pad_id())
        config = model.config
        self.dim = int(config.projection_dim)
        self.image_size = self.transform.min_source_side
        self.context_length = min(int(config.text_config.max_position_embeddings), self.max_tokens)

    def tokenize(self, texts: Sequence[str]) -> TokenBatch:
        with self._tokenizer_lock:
            return hf_tokenize(self._tokenizer, texts, self.context_length)

    def _drop_image_tower(self) -> None:
        model = self._loaded_model()
        model.vision_model = None  # CLIPModel and ChineseCLIPModel both name their image tower so
        model.visual_projection = None

    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        self._require_image_tower()
        with torch.inference_mode():
            out = self._model.get_image_features(pixel_values=torch.from_numpy(pixels).to(self.device))
        return l2_normalize(_features(out).float().cpu().numpy())

    def image_features_module(self) -> torch.nn.Module:
        """The export interface (`onnx.exportable.ExportableClip`): the image tower as a module."""
        return _ImageFeatures(self._loaded_model())

    def text_features_module(self) -> torch.nn.Module:
        """The text tower as a module; exact on ids cut after the longest text (causal or pad-masked)."""
        return _TextFeatures(self._loaded_model(), self._mask_pad_id())

    def export_tokenizer(self, folder: Path) -> TokenizerSpec:
        """Save the fast tokenizer as tokenizer.json with the pooling rule of the text config."""
        tokenizer = self._tokenizer
        fast = getattr(tokenizer, "backend_tokenizer", None)
        if fast is None:
            raise ConfigError(f"{self.source}: its tokenizer is not a fast (tokenizers) one")
        fast.save(str(folder / TOKENIZER_FILE))
        if self._mask_pad_id() is not None:  # BERT: [CLS] text [SEP], pooled at [CLS], padding masked
            return TokenizerSpec(
                TOKENIZER_FILE, "none", int(tokenizer.cls_token_id), int(tokenizer.sep_token_id),
                self._pad_id, "masked",
            )  # fmt: skip
        eos = int(self._loaded_model().config.text_config.eos_token_id)
        # transformers' own rule: eos_token_id 2 marks a legacy config, pooled at the highest id.
        pool: Literal["argmax", "eos"] = "argmax" if eos == 2 else "eos"
        if pool == "eos" and eos != tokenizer.eos_token_id:
            raise ConfigError(
                f"{self.source}: text config eos {eos} != tokenizer eos {tokenizer.eos_token_id}"
            )
        pad = tokenizer.pad_token_id
        return TokenizerSpec(
            TOKENIZER_FILE, "none", int(tokenizer.bos_token_id), int(tokenizer.eos_token_id),
            int(pad if pad is not None else 0), pool,
        )  # fmt: skip

    def _loaded_model(self) -> Any:
        if self._model is None:
            raise RuntimeError(f"{self.source}: export needs a loaded model")
        return self._model

    def encode_tokens(self, tokens: TokenBatch) -> np.ndarray:
        # Positions after the longest text's end-of-text token cannot influence any pooled (EOT) output
        # under the causal mask, so they are never computed. Position ids still start at 0 per row.
        # A bidirectional tower gets the same cut plus a mask over the shorter rows' padding.
        if self._text is None:
            raise RuntimeError(f"{self.source}: used before load()")
        ids = torch.from_numpy(np.ascontiguousarray(tokens.ids[:, : tokens.needed])).to(self.device)
        with torch.inference_mode():
            out = self._text(ids)
        return l2_normalize(out.float().cpu().numpy())

    def _mask_pad_id(self) -> int | None:
        """The pad id the text tower must mask (bidirectional towers), None for causal ones."""
        if self.kind is None:
            raise RuntimeError(f"{self.source}: used before load()")
        return self._pad_id if self.kind.text_tower is TextTower.BIDIRECTIONAL else None


def transformers_clip_embedders(
    source: str, device: str, *, max_tokens: int = 77, local_files_only: bool = False
) -> tuple[ClipImageEmbedder, ClipTextEmbedder]:
    """An image and a text embedder sharing one (not yet loaded) transformers CLIP model."""
    backbone = TransformersClip(source, device, max_tokens=max_tokens, local_files_only=local_files_only)
    return ClipImageEmbedder(backbone), ClipTextEmbedder(backbone)


def hf_tokenize(tokenizer: Any, texts: Sequence[str], context_length: int) -> TokenBatch:
    """Texts -> TokenBatch with a transformers tokenizer: padded to `context_length`, longer texts cut."""
    enc = tokenizer(
        list(texts),
        padding="max_length",
        truncation=True,
        max_length=context_length,
        return_attention_mask=True,
        return_tensors="np",
    )
    ids = np.asarray(enc["input_ids"], dtype=np.int64)
    lengths = np.asarray(enc["attention_mask"], dtype=np.int64).sum(axis=1)
    return TokenBatch(
        ids=ids, lengths=lengths, truncated=hf_truncated(tokenizer, texts, lengths, ids.shape[1])
    )


def hf_truncated(tokenizer: Any, texts: Sequence[str], lengths: np.ndarray, context: int) -> dict[int, int]:
    """Rows whose text the context cut -> the text's whole token count (specials included)."""
    rows = [i for i, n in enumerate(lengths) if n >= context]  # only rows that fill the context
    if not rows:
        return {}
    counts = tokenizer([texts[i] for i in rows], truncation=False, verbose=False)["input_ids"]
    return {i: len(c) for i, c in zip(rows, counts, strict=True) if len(c) > context}


def transform_from_hf_processor(processor: Any) -> ClipImageTransform:
    """The `ClipImageTransform` equivalent to a CLIPImageProcessor's settings."""
    size, crop = processor.size, processor.crop_size
    resize: int | tuple[int, int] | None = None
    if processor.do_resize:
        shortest, height, width = _get(size, "shortest_edge"), _get(size, "height"), _get(size, "width")
        if _get(size, "longest_edge") or not (shortest or (height and width)):
            raise ConfigError(
                f"unsupported CLIP image processor size {size!r} (want shortest_edge or height+width)"
            )
        resize = int(shortest) if shortest else (int(height), int(width))
    crop_hw = (int(_get(crop, "height")), int(_get(crop, "width"))) if processor.do_center_crop else None
    mean = _triple(processor.image_mean if processor.do_normalize else 0.0)
    std = _triple(processor.image_std if processor.do_normalize else 1.0)
    return ClipImageTransform(
        resize=resize,
        crop=crop_hw,
        mean=mean,
        std=std,
        resample=Image.Resampling(int(processor.resample)),
        crop_rounding="floor",
        rescale=float(processor.rescale_factor) if processor.do_rescale else 1.0,
    )


class _ImageFeatures(torch.nn.Module):
    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return _features(self.model.get_image_features(pixel_values=pixel_values))


class _TextFeatures(torch.nn.Module):
    """Text features from ids alone: a bidirectional tower's attention mask is built from the pad id."""

    def __init__(self, model: Any, mask_pad_id: int | None) -> None:
        super().__init__()
        self.model = model
        self.mask_pad_id = mask_pad_id

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        if self.mask_pad_id is None:
            return _features(self.model.get_text_features(input_ids=input_ids))
        mask = (input_ids != self.mask_pad_id).long()
        return _features(self.model.get_text_features(input_ids=input_ids, attention_mask=mask))


def _classes(kind: HfClipKind) -> tuple[Any, Any]:
    """The model and (PIL-equivalent settings) image processor classes of a `HF_CLIP_KINDS` row."""
    match kind.model_type:
        case "clip":
            from transformers import CLIPImageProcessor, CLIPModel

            return CLIPModel, CLIPImageProcessor
        case "chinese_clip":
            from transformers import ChineseCLIPImageProcessor, ChineseCLIPModel

            return ChineseCLIPModel, ChineseCLIPImageProcessor
    raise ConfigError(f"no transformers classes for CLIP model_type {kind.model_type!r}")


def _features(out: Any) -> torch.Tensor:
    """transformers 5 returns a ModelOutput whose pooler_output is projected; 4.x a bare tensor."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def _get(size: Any, key: str) -> Any:
    """A field of a SizeDict (transformers 5) or plain dict (4.x)."""
    return size.get(key) if isinstance(size, dict) else getattr(size, key, None)


def _triple(value: Any) -> tuple[float, float, float]:
    values = [float(value)] * 3 if isinstance(value, int | float) else [float(v) for v in value]
    if len(values) != 3:
        raise ConfigError(f"CLIP image mean/std must have 3 channels, got {value!r}")
    return values[0], values[1], values[2]
