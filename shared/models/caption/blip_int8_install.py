"""int8 captions by default on CPU, made at download: `mindsight models download` quantises BLIP, checks it
against fp32 (`blip_int8.check_int8`) and installs the passed model as a file (`blip_int8_file`) that the
caption worker loads without ever holding fp32. Its vision encoder and text decoder are exported to ONNX
and quantised for onnxruntime (`blip_vision_onnx`, `blip_decoder_onnx`: 1.7x torch int8's speed per
caption); what stays in torch is torch dynamic int8. The check runs on exactly what is installed.

A failed check writes nothing: the caption worker then quantises and checks at start, fails the same way and
keeps fp32; both say so loudly. Before the file is installed it is loaded back and must compute exactly the
logits of the model it was saved from.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shared.device import resolve_device
from shared.errors import ConfigError
from shared.models.onnx.cpu_int8 import Int8Outcome
from shared.models.store.locations import caption_int8_dir
from shared.settings import Settings

LABEL = "caption"
"""How the outcome names the caption model (CLIP's name their CLIP_MODELS label)."""


def caption_int8_not_wanted(settings: Settings) -> str | None:
    """Why this deployment gets no int8 caption file (None: it does, as the default on CPU)."""
    if not settings.caption.enabled:
        return "CAPTION_ENABLED=0"
    if settings.caption.precision == "fp32":
        return "MINDSIGHT_CAPTION_PRECISION=fp32"
    if settings.worker.device == "cuda":
        return "MINDSIGHT_DEVICE=cuda (fp32 runs on the GPU)"
    has_torch = importlib.util.find_spec("torch") is not None
    if settings.worker.device == "auto" and has_torch and resolve_device("auto").startswith("cuda"):
        return "a GPU is present (fp32 runs on it)"
    return None


def ensure_caption_int8(settings: Settings, progress: Callable[[str], None]) -> Int8Outcome:
    """Make the checked int8 file of the configured caption model unless a matching one is there."""
    if importlib.util.find_spec("torch") is None:
        return Int8Outcome(
            LABEL, "failed",
            "cannot make the int8 caption model here (no torch; the slim image): run `mindsight models "
            "download` in the full image on the same MINDSIGHT_MODELS_DIR",
        )  # fmt: skip
    from shared.models.caption.blip_captioner import resolve_caption_source
    from shared.models.caption.blip_int8_file import verified_int8_file

    name, store = settings.caption.model_name, settings.store
    folder = caption_int8_dir(store.models_dir)
    source = resolve_caption_source(name, store.models_dir)
    if verified_int8_file(folder, name, source, quiet=True) is not None:
        return Int8Outcome(LABEL, "present", str(folder))
    try:
        return _make(name, source, settings, progress)
    except _CheckFailed as exc:
        return Int8Outcome(LABEL, "fp32-kept", str(exc))
    except ConfigError as exc:
        return Int8Outcome(LABEL, "failed", f"{exc}; nothing was written, captions quantise at start")


def _make(name: str, source: str, settings: Settings, progress: Callable[[str], None]) -> Int8Outcome:
    from transformers import BlipForConditionalGeneration, BlipProcessor

    from shared.models.caption import blip_int8
    from shared.models.caption.blip_captioner import read_blip
    from shared.models.caption.blip_int8_file import (
        Int8FileManifest,
        current_versions,
        load_int8_file,
        same_outputs,
        save_int8_file,
        weights_fingerprint,
    )
    from shared.models.store.staging import staged_folder

    offline = settings.store.offline
    folder = caption_int8_dir(settings.store.models_dir)
    progress(f"caption {name}: loading fp32, quantising to int8 and checking it against fp32 on photos")
    processor = read_blip(source, BlipProcessor, offline, backend="pil")  # as the workers preprocess
    model = read_blip(source, BlipForConditionalGeneration, offline).eval()
    reference = blip_int8.fp32_reference(model, processor)
    with staged_folder(folder) as tmp:
        int8, vision, decoder = quantize_for_file(model, tmp, progress)
        check = blip_int8.check_int8(int8, reference)
        numbers = (
            f"vision encoder {vision}, text decoder {decoder}; token agreement {check.token_agreement} (>= "
            f"{blip_int8.MIN_TOKEN_AGREEMENT} required), logits cosine min {check.logits_cosine_min} (>= "
            f"{blip_int8.MIN_LOGITS_COSINE}) over {check.steps} tokens on {len(check.photos)} photos"
        )
        if not check.passed:
            raise _CheckFailed(f"int8 FAILED its check against fp32: {numbers}; nothing written")
        manifest = Int8FileManifest(
            source=name,
            weights=weights_fingerprint(source),
            versions=current_versions(),
            check=check.as_dict(),
            thresholds={
                "min_token_agreement": blip_int8.MIN_TOKEN_AGREEMENT,
                "min_logits_cosine": blip_int8.MIN_LOGITS_COSINE,
                "tie_margin": blip_int8.TIE_MARGIN,
                "check_steps": blip_int8.CHECK_STEPS,
            },
            vision=vision,
            decoder=decoder,
        )
        manifest = _with_torch_free_parts(manifest, int8, processor, reference, tmp, progress)
        save_int8_file(tmp, int8, manifest)
        if not same_outputs(load_int8_file(tmp), int8, reference.pixels, reference.tokens):
            raise ConfigError("the int8 file, loaded back, computes other logits than the model it holds")
    return Int8Outcome(LABEL, "exported", f"{folder} ({numbers})")


def quantize_for_file(model: Any, folder: Path, progress: Callable[[str], None]) -> tuple[Any, str, str]:
    """`model` (fp32) made into the int8 the file holds, in place: the vision encoder and the text decoder
    exported into `folder` for onnxruntime when possible, every torch Linear left dynamic int8; and what
    runs the vision encoder and the decoder (`Int8FileManifest.vision`, `.decoder`)."""
    from shared.models.caption import blip_int8

    vision, decoder = _onnx_parts(model, folder, progress)
    return blip_int8.quantize_blip(model, inplace=True), vision, decoder


def _with_torch_free_parts(
    manifest: Any, int8: Any, processor: Any, reference: Any, folder: Path, progress: Callable[[str], None]
) -> Any:
    """`manifest` with the facts that caption without torch (`blip_onnx_captioner`), and BLIP's tokenizer
    written beside, when both parts run on onnxruntime and the torch-free captioner picks exactly the
    tokens `int8` picks on the check's photos; `manifest` unchanged (captions on torch) otherwise."""
    import dataclasses

    import torch

    from shared.models.caption.blip_int8_file import Int8File
    from shared.models.caption.blip_onnx_captioner import TOKENIZER_FILE, CaptionFacts, OnnxBlipCaptioner

    if (manifest.vision, manifest.decoder) != ("onnxruntime-int8", "onnxruntime-int8"):
        return manifest
    facts = CaptionFacts.of(int8, processor)
    backend = getattr(processor.tokenizer, "backend_tokenizer", None)
    if facts is None or backend is None:
        progress("caption: this model's preprocessing or tokenizer is not one the torch-free path runs")
        return manifest
    backend.save(str(folder / TOKENIZER_FILE))
    candidate = dataclasses.replace(manifest, decoding=facts.as_dict())
    max_length = int(reference.tokens.shape[1])
    onnx = OnnxBlipCaptioner("check", Int8File(folder, candidate), max_length=max_length, threads=1)
    onnx.load()
    with torch.inference_mode():
        want = int8.generate(pixel_values=reference.pixels, max_length=max_length, num_beams=1).numpy()
    got = onnx.tokens(reference.pixels.numpy())
    if got.shape != want.shape or not (got == want).all():
        (folder / TOKENIZER_FILE).unlink()
        progress("caption: the torch-free captioner did not reproduce int8's tokens; captions stay on torch")
        return manifest
    return candidate


class _CheckFailed(Exception):
    """int8 did not reproduce fp32; the staged folder is dropped and fp32 stays."""


def _onnx_parts(model: Any, folder: Path, progress: Callable[[str], None]) -> tuple[str, str]:
    """Put onnxruntime int8 stand-ins (exported into `folder`) in place of `model.vision_model` and
    `model.text_decoder`, which frees their fp32 weights; `torch-int8` for a part (quantised with the rest)
    when this install cannot export ONNX or its export fails."""
    import torch

    from shared.models.caption.blip_decoder_onnx import OnnxTextDecoder, export_decoder_int8
    from shared.models.caption.blip_vision_onnx import OnnxVisionEncoder, export_vision_int8
    from shared.models.onnx.export import EXPORT_DEPENDENCIES

    missing = [m for m in EXPORT_DEPENDENCIES if importlib.util.find_spec(m) is None]
    if missing:
        progress(f"caption: no ONNX export here (missing {', '.join(missing)}); BLIP runs on torch int8")
        return "torch-int8", "torch-int8"
    threads = torch.get_num_threads()

    def vision() -> None:
        model.vision_model = OnnxVisionEncoder(export_vision_int8(model, folder), threads)

    def decoder() -> None:
        text, config = model.text_decoder, model.config.vision_config
        export_decoder_int8(text, folder, (config.image_size // config.patch_size) ** 2 + 1)
        model.text_decoder = OnnxTextDecoder(folder, text.config, text.generation_config, threads)

    def runtime(part: str, swap: Callable[[], None]) -> str:
        progress(f"caption: exporting the {part} to ONNX and quantising it to int8")
        try:
            swap()
        except Exception as exc:  # the exporter raises many kinds; the torch part still works
            why = f"{type(exc).__name__}: {str(exc)[:300]}"
            progress(f"caption: the {part}'s ONNX export failed ({why}); it runs on torch int8 (slower)")
            return "torch-int8"
        return "onnxruntime-int8"

    return runtime("vision encoder", vision), runtime("text decoder", decoder)
