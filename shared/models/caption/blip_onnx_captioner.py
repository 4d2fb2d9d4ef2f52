"""BLIP captions without torch: the int8 folder's onnxruntime graphs, numpy preprocessing, `tokenizers`.

When `mindsight models download` exported both the vision encoder and the text decoder (the default on a
CPU install), it also writes into the int8 folder what decoding needs besides the graphs (`CaptionFacts`,
in the manifest) and BLIP's tokenizer (`tokenizer.json`). A CPU worker then captions with this class:
pixel values as BLIP's PIL image processor makes them (resize, rescale, normalise; equal to it within
float rounding, tested), the vision graph, greedy decoding on the decoder graphs exactly as the torch
stand-in runs it (`blip_graphs.DecoderGraphs.greedy`, BLIP's prompt and stopping tokens), and the
tokenizer's decode. No torch or transformers is imported, which keeps their ~0.5 GB out of the photo
worker. Beam search (CAPTION_NUM_BEAMS > 1), fp32, GPUs and int8 folders without these parts run on
`BlipCaptioner` (torch).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from shared.errors import ConfigError
from shared.models.base import Captioner, RuntimeInfo
from shared.models.caption.blip_graphs import REMAKE, VISION_GRAPH, DecoderGraphs, Heads, VisionGraph

if TYPE_CHECKING:
    from shared.models.caption.blip_int8_file import Int8File

log = logging.getLogger(__name__)

TOKENIZER_FILE = "tokenizer.json"
"""BLIP's tokenizer in the int8 folder (the `tokenizers` library's file, as transformers' fast tokenizer
saves it)."""

ONNX_GENERATE_BATCH = 2
"""Photos per call with the int8 file's onnxruntime decoder: a one-photo step is too small to keep two
threads busy. Whole-photo bench, compose default (1 process x 2 threads, 12 photos): 1.18 photos/s at
batch 1, 1.48 at 2, 1.44 at 4, peak RSS of the stack 2,675 / 2,782 / 2,987 MiB. As with any dynamic int8,
a caption can differ slightly with the photo batched with it."""


@dataclass(frozen=True)
class CaptionFacts:
    """What captioning needs besides the graphs, read from the model at download (manifest `decoding`)."""

    bos_token_id: int
    """BLIP's decoder prompt ([DEC])."""
    eos_token_id: int
    """Where a caption ends: the text config's sep token, which BLIP's `generate` passes as eos."""
    pad_token_id: int
    layers: int
    heads: int
    head_size: int
    image_size: tuple[int, int]
    """(height, width) the image processor resizes to."""
    resample: int
    """PIL resampling filter of the resize (BLIP: 3, bicubic)."""
    rescale_factor: float
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]

    @classmethod
    def of(cls, model: Any, processor: Any) -> CaptionFacts | None:
        """From a transformers BLIP and its processor; None when its preprocessing is not the one this
        module implements (resize, rescale and normalise all on)."""
        image = processor.image_processor
        if not all(getattr(image, flag, False) for flag in ("do_resize", "do_rescale", "do_normalize")):
            return None
        text = model.config.text_config
        heads = Heads.of(text)
        size = image.size
        height, width = (
            (size["height"], size["width"]) if isinstance(size, dict) else (size.height, size.width)
        )
        return cls(
            bos_token_id=int(text.bos_token_id),
            eos_token_id=int(text.sep_token_id),
            pad_token_id=int(text.pad_token_id),
            layers=heads.layers,
            heads=heads.heads,
            head_size=heads.size,
            image_size=(int(height), int(width)),
            resample=int(image.resample),
            rescale_factor=float(image.rescale_factor),
            image_mean=tuple(float(x) for x in image.image_mean),  # type: ignore[arg-type]
            image_std=tuple(float(x) for x in image.image_std),  # type: ignore[arg-type]
        )

    @classmethod
    def from_manifest(cls, data: dict[str, Any]) -> CaptionFacts:
        """The facts as `as_dict` wrote them; TypeError, ValueError or KeyError when they are not."""

        def floats(name: str, n: int) -> tuple[float, ...]:
            values = tuple(float(x) for x in data[name])
            if len(values) != n:
                raise ValueError(f"{name} has {len(values)} values, not {n}")
            return values

        ints = {
            name: int(data[name]) for name in ("bos_token_id", "eos_token_id", "pad_token_id", "resample")
        }
        sizes = {name: int(data[name]) for name in ("layers", "heads", "head_size")}
        height, width = (int(x) for x in floats("image_size", 2))
        if min(height, width, *sizes.values()) < 1:
            raise ValueError("image_size, layers, heads and head_size must be positive")
        return cls(
            **ints, **sizes, image_size=(height, width), rescale_factor=float(data["rescale_factor"]),
            image_mean=floats("image_mean", 3), image_std=floats("image_std", 3),  # type: ignore[arg-type]
        )  # fmt: skip

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def pixels(self, images: list[Image.Image]) -> np.ndarray:
        """Pixel values [b, 3, h, w] as BLIP's PIL image processor makes them: RGB, resized, rescaled,
        normalised."""
        height, width = self.image_size
        mean = np.asarray(self.image_mean, np.float32)
        std = np.asarray(self.image_std, np.float32)
        out = np.empty((len(images), 3, height, width), np.float32)
        for i, image in enumerate(images):
            resized = image.convert("RGB").resize((width, height), resample=self.resample)
            scaled = np.asarray(resized, dtype=np.float32) * np.float32(self.rescale_factor)
            out[i] = ((scaled - mean) / std).transpose(2, 0, 1)
        return out


def torch_free(int8_file: Int8File | None, num_beams: int, *, quiet: bool = False) -> bool:
    """Whether `int8_file` can caption without torch: both parts on onnxruntime, readable facts and the
    tokenizer written at download, greedy decoding. Unreadable facts fall back to torch with a WARNING
    (unless `quiet`) saying how to remake the folder."""
    if int8_file is None or num_beams != 1:
        return False
    manifest = int8_file.manifest
    parts = (manifest.vision, manifest.decoder) == ("onnxruntime-int8", "onnxruntime-int8")
    if not (parts and manifest.decoding is not None and (int8_file.folder / TOKENIZER_FILE).is_file()):
        return False
    try:
        CaptionFacts.from_manifest(manifest.decoding)
    except (TypeError, ValueError, KeyError) as exc:
        if not quiet:
            log.warning(
                "caption int8 file %s: its decoding facts are unreadable (%s: %s); captions run on torch; %s",
                int8_file.folder, type(exc).__name__, exc, REMAKE,
            )  # fmt: skip
        return False
    return True


class OnnxBlipCaptioner(Captioner):
    """Images -> captions on the int8 folder's onnxruntime graphs, greedy, without torch."""

    def __init__(self, source: str, int8_file: Int8File, *, max_length: int, threads: int) -> None:
        super().__init__()
        if max_length < 2:
            # The decoder's prompt ([DEC]) counts towards max_length: below 2 nothing can be generated.
            raise ConfigError(f"CAPTION_MAX_LENGTH must be at least 2, got {max_length}")
        if int8_file.manifest.decoding is None:
            raise ConfigError(f"the int8 caption model at {int8_file.folder} has no decoding facts; {REMAKE}")
        self.source = source
        self.int8_file = int8_file
        self.max_length = max_length
        self.threads = threads
        self.facts = CaptionFacts.from_manifest(int8_file.manifest.decoding)
        self._vision: VisionGraph | None = None
        self._decoder: DecoderGraphs | None = None
        self._tokenizer: Any = None

    def _load(self) -> None:
        from tokenizers import Tokenizer

        folder, facts = self.int8_file.folder, self.facts
        try:
            self._tokenizer = Tokenizer.from_file(str(folder / TOKENIZER_FILE))
        except Exception as exc:  # tokenizers raises its own Exception subclass for a bad file
            raise ConfigError(f"cannot read {folder / TOKENIZER_FILE}: {exc}; {REMAKE}") from exc
        self._vision = VisionGraph(folder / VISION_GRAPH, self.threads)
        self._decoder = DecoderGraphs(folder, Heads(facts.layers, facts.heads, facts.head_size), self.threads)
        log.info(
            "caption model %s: int8 file %s on onnxruntime without torch (checked at download)",
            self.source, folder,
        )  # fmt: skip

    def tokens(self, pixels: np.ndarray) -> np.ndarray:
        """Greedy caption tokens of pixel values [b, 3, h, w]: BLIP's prompt, then up to max_length - 1
        new tokens, rows that ended padded (what BLIP's `generate` returns)."""
        assert self._vision is not None and self._decoder is not None, "load() first"
        facts = self.facts
        prompt = np.full((pixels.shape[0], 1), facts.bos_token_id, dtype=np.int64)
        hidden = self._vision(pixels)
        return self._decoder.greedy(
            prompt, hidden, facts.eos_token_id, facts.pad_token_id, self.max_length - prompt.shape[1]
        )

    def _predict(self, batch: list[Image.Image]) -> list[str]:
        captions: list[str] = []
        for start in range(0, len(batch), ONNX_GENERATE_BATCH):
            tokens = self.tokens(self.facts.pixels(batch[start : start + ONNX_GENERATE_BATCH]))
            captions += self._tokenizer.decode_batch(tokens.tolist(), skip_special_tokens=True)
        return [c.strip() for c in captions]

    @property
    def runtime_info(self) -> RuntimeInfo:
        manifest = self.int8_file.manifest
        return RuntimeInfo(
            runtime="onnxruntime",
            device="cpu",
            precision="int8",
            extra={
                "source": self.source,
                "max_length": self.max_length,
                "num_beams": 1,
                "int8_check": manifest.check,
                "int8_file": str(self.int8_file.folder),
                "vision_encoder": manifest.vision,
                "text_decoder": manifest.decoder,
                "torch": False,
            },
        )
