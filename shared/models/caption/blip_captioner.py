"""BLIP image captioning (transformers `BlipForConditionalGeneration`), one `generate` call per batch.

On CPU it runs int8 by default (MINDSIGHT_CAPTION_PRECISION=auto, see blip_int8.py) once int8 passes its
check against fp32 at load; fp32 otherwise, and always on GPU. `load_captioner` picks the torch-free
captioner (`blip_onnx_captioner`) instead when the int8 file can caption without torch. Importing this
module imports neither torch nor transformers: `BlipCaptioner` does when it loads.
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from shared.device import DevicePref
from shared.errors import ConfigError
from shared.models.base import Captioner, RuntimeInfo
from shared.models.caption.blip_int8_file import Int8File, verified_int8_file
from shared.models.caption.blip_onnx_captioner import ONNX_GENERATE_BATCH, OnnxBlipCaptioner, torch_free
from shared.models.store.locations import caption_int8_dir
from shared.models.store.source import hub_offline, parse_source
from shared.settings import CaptionSettings, ModelStoreSettings

if TYPE_CHECKING:
    from shared.models.caption.blip_int8 import Int8CaptionCheck

log = logging.getLogger(__name__)

CAPTION_FIX = (
    "run `mindsight models download` to fetch it into MINDSIGHT_MODELS_DIR, or set CAPTION_MODEL_NAME to a "
    "local directory holding a BLIP model saved with save_pretrained"
)
"""How an operator fixes a caption model that cannot be found; ends every missing-model error."""


def resolve_caption_source(name: str, models_dir: Path) -> str:
    """A local directory for `name` (as given, or under MINDSIGHT_MODELS_DIR), else `name` as a hub id.

    `Salesforce/blip-image-captioning-base` thus finds `models/Salesforce/blip-image-captioning-base`
    after `mindsight models download`, and only falls back to the hub when nothing is on disk.
    """
    if not name.strip():
        raise ConfigError(f"CAPTION_MODEL_NAME is empty; {CAPTION_FIX}")
    parsed = parse_source(name, models_dir, "caption")
    if parsed.local is not None:
        return str(parsed.local)
    if parsed.family is None:
        raise ConfigError(
            f"caption model directory {parsed.raw!r} does not exist (looked in {parsed.target}); "
            f"{CAPTION_FIX}"
        )
    return parsed.raw


def read_blip(source: str, cls: Any, local_files_only: bool, **kwargs: Any) -> Any:
    """`cls.from_pretrained(source, **kwargs)` (the processor or the fp32 model); ConfigError saying what
    to do."""
    try:
        with hub_offline(local_files_only):
            return cls.from_pretrained(source, local_files_only=local_files_only, **kwargs)
    except (OSError, ValueError) as exc:  # missing files, offline cache miss, bad repo id
        # transformers' messages run on for lines; their first sentence says what was missing.
        reason = (str(exc).strip() or repr(exc)).split(". ")[0].splitlines()[0][:300]
        mode = " (MINDSIGHT_OFFLINE: only local files and the HF cache were tried)"
        raise ConfigError(
            f"cannot load the BLIP caption model {source!r}{mode if local_files_only else ''}: "
            f"{type(exc).__name__}: {reason}; {CAPTION_FIX}"
        ) from exc


CPU_GENERATE_BATCH = 1
"""Photos per `generate` call on a CPU with BLIP's torch decoder. Batching makes each caption slower there,
in fp32 and torch int8 alike (`make bench-caption`, BLIP-base shapes, 16 tokens, one thread: torch int8
1008 ms per caption at batch 1 against 911 at batch 4 on a quiet box, 1060 / 1192 on a loaded one; 2439 /
3225 / 3486 ms at batch 1 / 4 / 8 fp32 loaded), so a job's photos are captioned one after the other."""


class BlipCaptioner(Captioner):
    """Images -> captions with BLIP; greedy by default (`num_beams=1`), so results are deterministic."""

    def __init__(
        self,
        source: str,
        *,
        device: str = "cpu",
        max_length: int = 64,
        num_beams: int = 1,
        local_files_only: bool = False,
        precision: str = "fp32",
        int8_file: Int8File | None = None,
    ) -> None:
        super().__init__()
        if max_length < 2:
            # The decoder's prompt ([DEC]) counts towards max_length: below 2 nothing can be generated.
            raise ConfigError(f"CAPTION_MAX_LENGTH must be at least 2, got {max_length}")
        if num_beams < 1:
            raise ConfigError(f"CAPTION_NUM_BEAMS must be at least 1, got {num_beams}")
        if precision not in ("auto", "fp32", "int8"):
            raise ConfigError(f"MINDSIGHT_CAPTION_PRECISION must be auto, fp32 or int8, got {precision!r}")
        if precision == "int8" and not device.startswith("cpu"):
            raise ConfigError(
                f"MINDSIGHT_CAPTION_PRECISION=int8 runs on the CPU only, but captions run on {device}; "
                "set it to auto (fp32 on GPU) or set MINDSIGHT_DEVICE=cpu"
            )
        self.source = source
        self.wanted_precision = precision
        self.precision = "fp32"
        self.int8_check: Int8CaptionCheck | None = None
        self.int8_loaded_from: Path | None = None
        """The int8 file the running model came from (None: quantised at load, or fp32)."""
        self.device = device
        self.max_length = max_length
        self.num_beams = num_beams
        self.local_files_only = local_files_only
        self.int8_file = int8_file
        """A checked int8 file of this model, loaded instead of quantising at load when int8 runs."""
        self._model: Any = None
        self._processor: Any = None

    def _load(self) -> None:
        from transformers import BlipForConditionalGeneration, BlipProcessor

        int8 = self.wanted_precision != "fp32" and self.device.startswith("cpu")
        # PIL preprocessing, as the torch-free captioner computes it (torchvision's resize differs slightly)
        self._processor = read_blip(self.source, BlipProcessor, self.local_files_only, backend="pil")
        if not (int8 and self.int8_file is not None and self._from_int8_file(self.int8_file)):
            self._model = read_blip(self.source, BlipForConditionalGeneration, self.local_files_only)
            self._model = self._model.to(self.device).eval()
            if int8:
                self._to_int8()
        log.info("caption model %s loaded on %s (%s)", self.source, self.device, self.precision)

    def _from_int8_file(self, int8_file: Int8File) -> bool:
        """Load the int8 file made at download; False (with a warning) when it cannot be read."""
        if self.num_beams > 1 and int8_file.manifest.decoder != "torch-int8":
            log.info(
                "caption model %s: CAPTION_NUM_BEAMS=%d, and the int8 file's onnxruntime decoder decodes "
                "greedily; quantising the torch model at start instead", self.source, self.num_beams,
            )  # fmt: skip
            return False
        from shared.models.caption.blip_int8 import Int8CaptionCheck
        from shared.models.caption.blip_int8_file import load_int8_file

        try:
            self._model = load_int8_file(int8_file.folder)
        except (OSError, RuntimeError, ValueError, KeyError, ConfigError, pickle.UnpicklingError) as exc:
            log.warning(
                "caption model %s: cannot load its int8 file %s (%s: %s); quantising at start instead "
                "(`mindsight models download --caption` makes the file again)",
                self.source, int8_file.folder, type(exc).__name__, str(exc)[:300],
            )  # fmt: skip
            return False
        self.precision = "int8"
        self.int8_loaded_from = int8_file.folder
        self.int8_check = Int8CaptionCheck(**int8_file.manifest.check)
        log.info("caption model %s: int8 file %s (checked at download)", self.source, int8_file.folder)
        return True

    def _to_int8(self) -> None:
        """Quantise the model in place and keep it when it passes its check against fp32; otherwise say so
        loudly and load fp32 again (in place spares a second fp32 copy at every start; failures are rare)."""
        from transformers import BlipForConditionalGeneration

        from shared.models.caption.blip_int8 import (
            MIN_LOGITS_COSINE,
            MIN_TOKEN_AGREEMENT,
            check_int8,
            fp32_reference,
            quantize_blip,
        )

        reference = fp32_reference(self._model, self._processor)
        self._model = quantize_blip(self._model, inplace=True)
        check = check_int8(self._model, reference)
        self.int8_check = check
        if check.passed:
            self.precision = "int8"
            log.info("caption model %s: int8 passed its check against fp32: %s", self.source, check.as_dict())
            return
        log.warning(
            "caption model %s: int8 FAILED its check against fp32 (needs token agreement >= %s and logits "
            "cosine >= %s): %s; captions stay fp32 (slower). MINDSIGHT_CAPTION_PRECISION=fp32 skips it",
            self.source, MIN_TOKEN_AGREEMENT, MIN_LOGITS_COSINE, check.as_dict(),
        )  # fmt: skip
        self._model = read_blip(self.source, BlipForConditionalGeneration, self.local_files_only)
        self._model = self._model.to(self.device).eval()

    def _predict(self, batch: list[Image.Image]) -> list[str]:
        import torch

        step = len(batch) if self.device.startswith("cuda") else self._cpu_batch()
        captions: list[str] = []
        for start in range(0, len(batch), step):
            chunk = batch[start : start + step]
            pixels = self._processor(images=chunk, return_tensors="pt")["pixel_values"].to(self.device)
            with torch.inference_mode():
                tokens = self._model.generate(
                    pixel_values=pixels, max_length=self.max_length, num_beams=self.num_beams
                )
            captions += self._processor.batch_decode(tokens, skip_special_tokens=True)
        return [c.strip() for c in captions]

    def _runtime_name(self) -> str:
        """What computes the caption: `torch`, `onnxruntime` (encoder and decoder graphs of the int8 file,
        torch's generate loop around them) or `onnxruntime+torch` (one of the two on each)."""
        if not (self.int8_loaded_from and self.int8_file):
            return "torch"
        manifest = self.int8_file.manifest
        return "+".join(sorted({part.split("-")[0] for part in (manifest.vision, manifest.decoder)}))

    def _cpu_batch(self) -> int:
        from shared.models.caption.blip_decoder_onnx import OnnxTextDecoder

        onnx = isinstance(getattr(self._model, "text_decoder", None), OnnxTextDecoder)
        return ONNX_GENERATE_BATCH if onnx else CPU_GENERATE_BATCH

    @property
    def runtime_info(self) -> RuntimeInfo:
        return RuntimeInfo(
            runtime=self._runtime_name(),
            device=self.device,
            precision=self.precision,
            extra={
                "source": self.source,
                "max_length": self.max_length,
                "num_beams": self.num_beams,
                **({"int8_check": self.int8_check.as_dict()} if self.int8_check else {}),
                **({"int8_file": str(self.int8_loaded_from)} if self.int8_loaded_from else {}),
                **(
                    {
                        "vision_encoder": self.int8_file.manifest.vision,
                        "text_decoder": self.int8_file.manifest.decoder,
                    }
                    if self.int8_loaded_from and self.int8_file
                    else {}
                ),
            },  # fmt: skip
        )


def caption_needs_torch(caption: CaptionSettings, store: ModelStoreSettings, pref: DevicePref) -> bool:
    """True unless captions will run without torch (`load_captioner` picking `OnnxBlipCaptioner`): on a
    CPU (as CLIP decides it: onnxruntime offers no CUDA for `pref`), int8, with an int8 file that can."""
    from shared.models.clip.runtime import expects_gpu

    if expects_gpu("cpu", pref):
        return True
    try:
        source = resolve_caption_source(caption.model_name, store.models_dir)
    except ConfigError:
        return True  # load_captioner says what is wrong
    return not torch_free(_cpu_int8_file(caption, store, source, quiet=True), caption.num_beams, quiet=True)


def _cpu_int8_file(
    caption: CaptionSettings, store: ModelStoreSettings, source: str, *, quiet: bool = False
) -> Int8File | None:
    """The checked int8 file a CPU worker takes for this caption model (None: fp32 asked for, or no
    matching file)."""
    if caption.precision == "fp32":
        return None
    return verified_int8_file(caption_int8_dir(store.models_dir), caption.model_name, source, quiet=quiet)


def load_captioner(
    caption: CaptionSettings, store: ModelStoreSettings, device: str, threads: int = 1
) -> Captioner:
    """Build the configured BLIP captioner on `device` and load it now, so a missing model fails start-up:
    without torch when the int8 file allows it (`blip_onnx_captioner.torch_free`, on `threads`), else
    BLIP in torch."""
    source = resolve_caption_source(caption.model_name, store.models_dir)
    int8_file = _cpu_int8_file(caption, store, source) if device.startswith("cpu") else None
    if int8_file is not None and torch_free(int8_file, caption.num_beams):
        onnx = OnnxBlipCaptioner(source, int8_file, max_length=caption.max_length, threads=threads)
        onnx.load()
        return onnx
    captioner = BlipCaptioner(
        source,
        device=device,
        max_length=caption.max_length,
        num_beams=caption.num_beams,
        local_files_only=store.offline,
        precision=caption.precision,
        int8_file=int8_file,
    )
    captioner.load()
    return captioner
