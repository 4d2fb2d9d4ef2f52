"""open_clip CLIP models: image and text embedders over one loaded model.

Sources (parsed by `store.source.parse_source`): `hf-hub:org/repo`; `ModelName/tag` or `ModelName:tag`
(a built-in config with a pretrained tag); `ModelName:/path/to/checkpoint` (a built-in config with local
weights); a local folder in hf-hub open_clip layout (open_clip_config.json + one of its weight files).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import open_clip
import torch
from open_clip.hf_model import HFTextEncoder
from open_clip.transformer import TextTransformer, text_global_pool
from PIL import Image

from shared.errors import ConfigError
from shared.models.base import l2_normalize
from shared.models.clip.backbone import ClipBackbone, ClipImageEmbedder, ClipTextEmbedder, TokenBatch
from shared.models.clip.preprocess import ClipImageTransform
from shared.models.onnx.exportable import TOKENIZER_FILE
from shared.models.onnx.manifest import TokenizerSpec
from shared.models.onnx.tokenizer import clip_bpe_tokenizer_json
from shared.models.store.source import OPEN_CLIP_CONFIG, OPEN_CLIP_WEIGHT_FILES, ModelSource, require_local

_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


@dataclass(frozen=True)
class OpenClipSpec:
    """What to hand `open_clip.create_model`: a model name (maybe with a schema) and a pretrained tag/file."""

    model_name: str
    pretrained: str | None = None


def open_clip_spec(source: ModelSource, models_dir: Path | None = None) -> OpenClipSpec:
    """What open_clip needs for a parsed source, checked against open_clip's own tables and the disk."""
    local, raw = source.local, source.raw
    if local is not None and local.is_dir():
        if not (local / OPEN_CLIP_CONFIG).is_file():
            raise ConfigError(f"{local} has no {OPEN_CLIP_CONFIG}, so it is not an open_clip model folder")
        if not any((local / name).is_file() for name in OPEN_CLIP_WEIGHT_FILES):
            raise ConfigError(
                f"{local} has {OPEN_CLIP_CONFIG} but no weights ({', '.join(OPEN_CLIP_WEIGHT_FILES)})"
            )
        return OpenClipSpec(f"local-dir:{local}")
    if raw.startswith(("hf-hub:", "local-dir:")):
        return OpenClipSpec(raw)
    name, tag = source.open_clip_name, source.open_clip_pretrained
    if not name or not tag:
        raise ConfigError(
            f"open_clip source {raw!r} must be hf-hub:org/repo, ModelName/tag or a model folder"
        )
    if name not in open_clip.list_models():
        raise ConfigError(f"open_clip has no built-in model {name!r} (source {raw!r})")
    if source.is_checkpoint:
        what = f"checkpoint for open_clip model {name}"
        path = source.local or require_local(tag, models_dir, what)
        if not path.is_file():
            raise ConfigError(f"checkpoint {path} for open_clip model {name} is not a file")
        return OpenClipSpec(name, str(path))
    if not open_clip.get_pretrained_cfg(name, tag):
        known = ", ".join(open_clip.list_pretrained_tags_by_model(name)) or "none"
        raise ConfigError(f"open_clip model {name} has no pretrained tag {tag!r} (known: {known})")
    return OpenClipSpec(name, tag)


class OpenClip(ClipBackbone):
    """An open_clip CLIP model (see the module docstring for accepted sources)."""

    family = "open_clip"

    def __init__(
        self, spec: OpenClipSpec, device: str, *, max_tokens: int = 77, source: str | None = None
    ) -> None:
        super().__init__(source or spec.model_name, device, max_tokens=max_tokens)
        self.spec = spec
        self._model: Any = None
        self._tokenizer: Any = None
        self._tower: _CausalTextTower | None = None
        self._hf_pad_id: int | None = None

    def _load(self) -> None:
        spec = self.spec
        tag_cfg = open_clip.get_pretrained_cfg(spec.model_name, spec.pretrained) if spec.pretrained else {}
        model = open_clip.create_model(
            spec.model_name,
            pretrained=spec.pretrained,
            device=self.device,
            require_pretrained=True,  # never serve a randomly initialised model because weights went missing
            # OpenAI-trained tags need QuickGELU; without it the model loads but embeds wrongly.
            force_quick_gelu=bool(tag_cfg.get("quick_gelu", False)),
        )
        self._model = model.eval()
        self._tower = _CausalTextTower.of(model)
        self._hf_pad_id = _hf_text_pad_id(model)
        self._tokenizer = open_clip.get_tokenizer(spec.model_name)
        # A transformers text tower reports its position table (XLM-R: 514, of which 512 usable) as the
        # model's context; the tokenizer's configured context (77) is what the model was trained with.
        model_context = int(getattr(model, "context_length", None) or 77)
        trained = int(getattr(self._tokenizer, "context_length", None) or model_context)
        self.context_length = min(model_context, trained, self.max_tokens)
        self.transform = transform = transform_from_open_clip_cfg(open_clip.get_model_preprocess_cfg(model))
        self.image_size = transform.min_source_side
        self.dim = self._output_dim(transform.output_size)

    def _output_dim(self, size: tuple[int, int]) -> int:
        dim = getattr(self._model.visual, "output_dim", None)
        if dim:
            return int(dim)
        with torch.inference_mode():  # towers without the attribute (timm): measure it
            probe = self._model.encode_image(torch.zeros(1, 3, *size, device=self.device))
        return int(probe.shape[-1])

    def tokenize(self, texts: Sequence[str]) -> TokenBatch:
        ids = open_clip_tokenize(self._tokenizer, texts, self.context_length)
        truncated = open_clip_truncated(self._tokenizer, texts, ids)
        if self._hf_pad_id is not None:  # a transformers tower masks the pad id: real tokens only
            lengths = (ids != self._hf_pad_id).sum(axis=1).astype(np.int64)
        elif self._tower is None:
            lengths = np.full(len(ids), ids.shape[1], dtype=np.int64)
        else:
            lengths = pooled_positions(ids, self._tower.pool_type, self._tower.eos_id) + 1
        return TokenBatch(ids=ids, lengths=lengths, truncated=truncated)

    def image_features_module(self) -> torch.nn.Module:
        """The export interface (`onnx.exportable.ExportableClip`): the image tower as a module."""
        return _ImageFeatures(self._loaded_model())

    def text_features_module(self) -> torch.nn.Module:
        """The text tower as a module, exact on cut ids: the causal CLIP transformer, or a transformers
        (XLM-RoBERTa) tower, which masks its pad id; ConfigError for other text towers."""
        model = self._loaded_model()
        if self._hf_pad_id is not None:
            return _HfTextFeatures(model)
        if self._tower is None:
            raise ConfigError(
                f"{self.source}: its text tower is not a causal, end-of-text pooled CLIP transformer, the "
                "only kind the ONNX export supports"
            )
        return _TextFeatures(self._model, self._tower)

    def export_tokenizer(self, folder: Path) -> TokenizerSpec:
        """CLIP's BPE as a tokenizers tokenizer.json (open_clip's SimpleTokenizer with clean 'lower' only),
        or the fast tokenizer of a transformers text tower (XLM-R's SentencePiece, clean 'whitespace')."""
        from open_clip.tokenizer import HFTokenizer, SimpleTokenizer, _clean_lower, _clean_whitespace

        tokenizer, tower = self._tokenizer, self._tower
        if isinstance(tokenizer, HFTokenizer) and self._hf_pad_id is not None:
            hf = tokenizer.tokenizer
            fast = getattr(hf, "backend_tokenizer", None)
            if (
                fast is None
                or tokenizer.clean_fn is not _clean_whitespace
                or tokenizer.strip_sep_token
                or tokenizer.tokenizer_mode
            ):
                raise ConfigError(
                    f"{self.source}: only a fast transformers tokenizer with open_clip's 'whitespace' clean "
                    "and no special modes can be exported"
                )
            fast.save(str(folder / TOKENIZER_FILE))
            return TokenizerSpec(
                TOKENIZER_FILE, "open_clip_whitespace", int(hf.bos_token_id), int(hf.eos_token_id),
                self._hf_pad_id, "masked",
            )  # fmt: skip
        if (
            not isinstance(tokenizer, SimpleTokenizer)
            or tokenizer.clean_fn is not _clean_lower
            or tower is None
        ):
            raise ConfigError(
                f"{self.source}: only open_clip models with CLIP's BPE tokenizer (SimpleTokenizer, clean "
                f"'lower') and a causal text tower can be exported; this one has {type(tokenizer).__name__}"
            )
        if tokenizer.reduction_fn is not None:
            raise ConfigError(f"{self.source}: its tokenizer reduces long texts, which the export cannot")
        merges = sorted(tokenizer.bpe_ranks, key=tokenizer.bpe_ranks.get)
        sot, eot = tokenizer.decoder[tokenizer.sot_token_id], tokenizer.decoder[tokenizer.eot_token_id]
        text = clip_bpe_tokenizer_json(tokenizer.encoder, merges, sot, eot)
        (folder / TOKENIZER_FILE).write_text(text, encoding="utf-8")
        pool: Literal["argmax", "eos"] = "argmax" if tower.pool_type == "argmax" else "eos"  # `of` checks it
        return TokenizerSpec(
            TOKENIZER_FILE, "open_clip", tokenizer.sot_token_id, tokenizer.eot_token_id, 0, pool
        )

    def _loaded_model(self) -> Any:
        if self._model is None:
            raise RuntimeError(f"{self.source}: export needs a loaded model")
        return self._model

    def _drop_image_tower(self) -> None:
        self._loaded_model().visual = None  # CLIP and CustomTextCLIP alike; encode_text never reads it

    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        self._require_image_tower()
        with torch.inference_mode():
            out = self._model.encode_image(torch.from_numpy(pixels).to(self.device))
        return l2_normalize(out.float().cpu().numpy())

    def encode_tokens(self, tokens: TokenBatch) -> np.ndarray:
        with torch.inference_mode():
            if self._hf_pad_id is not None:  # padding masked by the tower: cut after the longest text
                ids = torch.from_numpy(np.ascontiguousarray(tokens.ids[:, : tokens.needed])).to(self.device)
                out = self._model.encode_text(ids)
            elif self._tower is None:  # no causal mask / custom text tower: run the full context
                ids = torch.from_numpy(tokens.ids).to(self.device)
                out = self._model.encode_text(ids)
            else:
                ids = torch.from_numpy(np.ascontiguousarray(tokens.ids[:, : tokens.needed])).to(self.device)
                out = self._tower.encode(ids)
        return l2_normalize(out.float().cpu().numpy())


def open_clip_embedders(
    spec: OpenClipSpec, device: str, *, max_tokens: int = 77, source: str | None = None
) -> tuple[ClipImageEmbedder, ClipTextEmbedder]:
    """An image and a text embedder sharing one (not yet loaded) open_clip model."""
    backbone = OpenClip(spec, device, max_tokens=max_tokens, source=source)
    return ClipImageEmbedder(backbone), ClipTextEmbedder(backbone)


def open_clip_tokenize(tokenizer: Any, texts: Sequence[str], context_length: int) -> np.ndarray:
    """Texts -> int64 [N, context_length] with an open_clip tokenizer (long texts are cut, EOT kept)."""
    return np.asarray(tokenizer(list(texts), context_length=context_length), dtype=np.int64)


def open_clip_truncated(tokenizer: Any, texts: Sequence[str], ids: np.ndarray) -> dict[int, int]:
    """Rows whose text the context cut -> the text's whole token count, for CLIP's BPE and HF tokenizers.

    Only rows whose last position holds a real token can have been cut, so the rest are never re-counted.
    """
    from open_clip.tokenizer import HFTokenizer, SimpleTokenizer

    context = ids.shape[1]
    if isinstance(tokenizer, SimpleTokenizer):
        pad = 0
    elif isinstance(tokenizer, HFTokenizer) and not tokenizer.tokenizer_mode:
        pad = int(tokenizer.tokenizer.pad_token_id or 0)
    else:
        return {}  # other tokenizers (SigLIP's, reducing ones) are not counted
    out: dict[int, int] = {}
    for row in np.flatnonzero(ids[:, -1] != pad).tolist():
        if isinstance(tokenizer, SimpleTokenizer):
            count = len(tokenizer.encode(texts[row])) + 2  # with start- and end-of-text
        else:
            hf = tokenizer.tokenizer
            count = len(hf(tokenizer.clean_fn(texts[row]), truncation=False, verbose=False)["input_ids"])
        if count > context:
            out[row] = count
    return out


def pooled_positions(ids: np.ndarray, pool_type: str, eos_id: int | None) -> np.ndarray:
    """Index of the token each row's embedding is pooled from, as open_clip's text_global_pool picks it."""
    if pool_type == "argmax":
        return ids.argmax(axis=1).astype(np.int64)
    return (ids == eos_id).argmax(axis=1).astype(np.int64)


def transform_from_open_clip_cfg(cfg: dict[str, Any]) -> ClipImageTransform:
    """The `ClipImageTransform` equivalent to open_clip's eval transform for a preprocess config."""
    size = cfg.get("size", 224)
    height, width = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    mode, interpolation = cfg.get("resize_mode", "shortest"), cfg.get("interpolation", "bicubic")
    if interpolation not in _RESAMPLE:
        raise ConfigError(f"unsupported open_clip interpolation {interpolation!r}")
    if mode == "shortest" and height == width:
        resize: int | tuple[int, int] = height
        crop: tuple[int, int] | None = (height, width)
    elif mode == "squash":
        resize, crop = (height, width), None
    else:
        raise ConfigError(f"unsupported open_clip resize_mode {mode!r} for size {size!r}")
    mean = tuple(float(v) for v in cfg.get("mean", open_clip.OPENAI_DATASET_MEAN))
    std = tuple(float(v) for v in cfg.get("std", open_clip.OPENAI_DATASET_STD))
    return ClipImageTransform(
        resize=resize,
        crop=crop,
        mean=(mean[0], mean[1], mean[2]),
        std=(std[0], std[1], std[2]),
        resample=_RESAMPLE[interpolation],
        crop_rounding="round",
    )


class _ImageFeatures(torch.nn.Module):
    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixel_values)


def _hf_text_pad_id(model: torch.nn.Module) -> int | None:
    """The pad id a transformers text tower (open_clip's HFTextEncoder) masks; None for other towers."""
    text = getattr(model, "text", None)
    if not isinstance(text, HFTextEncoder):
        return None
    pad = getattr(text.config, "pad_token_id", None)
    return int(pad) if pad is not None else None


class _HfTextFeatures(torch.nn.Module):
    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model.encode_text(input_ids)


class _TextFeatures(torch.nn.Module):
    def __init__(self, model: Any, tower: _CausalTextTower) -> None:
        super().__init__()
        self.model = model  # registered, so the exporter sees the tower's weights as parameters
        self.tower = tower

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.tower.encode(input_ids)


@dataclass
class _CausalTextTower:
    """The parts of a causal-mask CLIP text tower needed to run it on fewer than context_length tokens."""

    token_embedding: torch.nn.Module
    positional_embedding: torch.Tensor
    transformer: torch.nn.Module
    ln_final: torch.nn.Module
    text_projection: Any
    attn_mask: torch.Tensor
    pool_type: str
    eos_id: int | None

    @classmethod
    def of(cls, model: torch.nn.Module) -> _CausalTextTower | None:
        """The tower of `model` when truncation is exact for it (causal, EOT-pooled, no CLS/pad mask)."""
        if isinstance(model, open_clip.CLIP):
            m: Any = model
            parts = (m, m.text_pool_type, m.text_eos_id)
        elif isinstance(getattr(model, "text", None), TextTransformer):
            t: Any = getattr(model, "text", None)
            if t.cls_emb is not None or t.use_pad_mask:
                return None
            parts = (t, t.pool_type, t.eos_id)
        else:
            return None
        tower, pool_type, eos_id = parts
        if tower.attn_mask is None or pool_type not in ("argmax", "eos"):
            return None
        return cls(
            tower.token_embedding,
            tower.positional_embedding,
            tower.transformer,
            tower.ln_final,
            tower.text_projection,
            tower.attn_mask,
            pool_type,
            eos_id,
        )

    def encode(self, ids: torch.Tensor) -> torch.Tensor:
        """open_clip's encode_text on ids already cut to the needed length (mask and positions sliced)."""
        n = ids.shape[1]
        cast_dtype = self.transformer.get_cast_dtype()  # type: ignore[operator]
        x = self.token_embedding(ids).to(cast_dtype) + self.positional_embedding[:n].to(cast_dtype)
        x = self.transformer(x, attn_mask=self.attn_mask[:n, :n])
        x = text_global_pool(self.ln_final(x), ids, self.pool_type, eos_token_id=self.eos_id)
        if isinstance(self.text_projection, torch.nn.Linear):
            return self.text_projection(x)
        return x if self.text_projection is None else x @ self.text_projection
