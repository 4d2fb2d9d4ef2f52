"""BLIP's checked int8 model as a file: written once at download, loaded at start without fp32.

The folder (`store.locations.caption_int8_dir`) holds `blip-int8.pt` (the quantised model's state_dict
and its non-persistent buffers; `torch.load(weights_only=True)` reads it: a dynamic int8 Linear saves its
weight as a quantised tensor), the vision encoder and the text decoder as onnxruntime int8 graphs when they
could be exported (`blip_vision_onnx`, `blip_decoder_onnx`; the state_dict then holds none of their
weights), the model's `config.json` and `generation_config.json`, and `mindsight_int8.json`
(`Int8FileManifest`), written last. Loading builds BLIP from the config on the meta device, puts the
onnxruntime stand-ins in place of the vision model and the text decoder when their graphs are there, a
dynamic int8 Linear wherever the file holds packed int8 weights, and fills everything else from the file:
no fp32 Linear weight is ever allocated, so a caption worker's peak RSS holds the int8 model, not the
~1 GB of fp32 BLIP-base it was made from.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import logging
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared.errors import ConfigError
from shared.models.store.source import HF_WEIGHT_FILES

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

WEIGHTS_FILE = "blip-int8.pt"
MANIFEST_NAME = "mindsight_int8.json"
FORMAT_VERSION = 4
"""Bumped when the layout changes; a file of another format is not loaded (quantised at start instead, until
`mindsight models download` makes it again). 2: the vision encoder may be an onnxruntime graph; 3: the text
decoder too; 4: with both on onnxruntime, the facts and the tokenizer that caption without torch
(`blip_onnx_captioner`)."""
PACKED = "._packed_params._packed_params"
"""The state_dict key suffix under which a dynamic int8 Linear keeps its (int8 weight, fp32 bias)."""
VERSIONED = ("torch", "transformers")
"""Whose versions must match the ones the file was written with: torch owns the packed format, transformers
the module tree the state_dict's keys name."""


@dataclass(frozen=True)
class Int8FileManifest:
    """What an int8 file was made from and what its check against fp32 measured."""

    source: str
    """CAPTION_MODEL_NAME as configured when it was made."""
    weights: dict[str, list[int]]
    """The source folder's weight files: name -> [size, mtime_ns] (empty for a hub id read from the cache)."""
    versions: dict[str, str]
    check: dict[str, Any]
    """`Int8CaptionCheck.as_dict()`; only a passed check is ever written."""
    thresholds: dict[str, float]
    vision: str = "torch-int8"
    """What runs the vision encoder: `onnxruntime-int8` (the graph in the folder) or `torch-int8`."""
    decoder: str = "torch-int8"
    """What runs the text decoder: `onnxruntime-int8` (blip_decoder_onnx's graphs) or `torch-int8`."""
    decoding: dict[str, Any] | None = None
    """`blip_onnx_captioner.CaptionFacts` when the graphs caption without torch (its tokenizer beside)."""
    format: int = FORMAT_VERSION


def current_versions() -> dict[str, str]:
    """The installed versions of `VERSIONED`."""
    return {dist: md.version(dist) for dist in VERSIONED}


def weights_fingerprint(source: str) -> dict[str, list[int]]:
    """Size and mtime of each weight file of a local model folder, so a replaced model is noticed."""
    folder = Path(source)
    if not folder.is_dir():
        return {}
    files = [p for p in folder.iterdir() if p.name in HF_WEIGHT_FILES or p.match("model-*.safetensors")]
    return {p.name: [p.stat().st_size, p.stat().st_mtime_ns] for p in sorted(files)}


def save_int8_file(folder: Path, model: Any, manifest: Int8FileManifest) -> None:
    """Write a quantised BLIP and its manifest into `folder` (the manifest last)."""
    import torch

    state = model.state_dict()
    buffers = {n: b for n, b in model.named_buffers() if n not in state}  # non-persistent: position ids
    torch.save({"state_dict": state, "buffers": buffers}, folder / WEIGHTS_FILE)
    model.config.save_pretrained(folder)
    model.generation_config.save_pretrained(folder)
    (folder / MANIFEST_NAME).write_text(json.dumps(asdict(manifest), indent=2) + "\n", encoding="utf-8")


def read_int8_manifest(folder: Path) -> Int8FileManifest:
    """The manifest of an int8 folder; ConfigError when missing, unreadable or of another format."""
    path = folder / MANIFEST_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") != FORMAT_VERSION:
            found = data.get("format")
            raise ConfigError(f"{path} has format {found!r}, this version reads {FORMAT_VERSION}")
        return Int8FileManifest(**data)
    except FileNotFoundError as exc:
        raise ConfigError(f"no int8 caption model at {folder}") from exc
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc


def mismatch(manifest: Int8FileManifest, model_name: str, source: str) -> str | None:
    """Why the file was not made from this model with these libraries (None: it was)."""
    if manifest.source != model_name:
        return f"it was made from {manifest.source!r}, not {model_name!r}"
    if manifest.weights != weights_fingerprint(source):
        return f"the weight files in {source} changed since it was made"
    if manifest.versions != current_versions():
        return f"it was made with {manifest.versions}, this process runs {current_versions()}"
    if manifest.check.get("passed") is not True:
        return "its check against fp32 did not pass"
    return None


@dataclass(frozen=True)
class Int8File:
    """A folder holding a passed int8 file of the configured caption model, and its manifest."""

    folder: Path
    manifest: Int8FileManifest


def verified_int8_file(folder: Path, model_name: str, source: str, *, quiet: bool = False) -> Int8File | None:
    """`folder` when it holds a passed int8 of this model for these libraries; None otherwise, with an INFO
    line (unless `quiet`) saying why and what makes starts cheaper."""
    try:
        manifest = read_int8_manifest(folder)
        why = mismatch(manifest, model_name, source)
    except ConfigError as exc:
        why = str(exc)
    if why is None:
        return Int8File(folder, manifest)
    if quiet:
        return None
    log.info(
        "caption model %s: int8 file not used (%s); quantising at start instead, which holds the fp32 model "
        "in memory first: `mindsight models download` makes a checked int8 file and cheaper starts",
        model_name, why,
    )  # fmt: skip
    return None


def load_int8_file(folder: Path, threads: int | None = None) -> Any:
    """The quantised BLIP in `folder`, built without materialising its fp32 Linear weights. Its onnxruntime
    vision encoder, when the folder has one, runs on `threads` (default: as many as torch in this process)."""
    import torch
    from transformers import BlipConfig, BlipForConditionalGeneration, GenerationConfig

    from shared.models.caption.blip_decoder_onnx import DECODER_GRAPH, OnnxTextDecoder
    from shared.models.caption.blip_vision_onnx import VISION_GRAPH, OnnxVisionEncoder

    with torch.device("meta"):
        model = BlipForConditionalGeneration(BlipConfig.from_pretrained(folder))
    threads = threads or torch.get_num_threads()
    if (folder / VISION_GRAPH).is_file():
        encoder = OnnxVisionEncoder(folder / VISION_GRAPH, threads)
        model.vision_model = encoder  # type: ignore[assignment]  # answers as BlipVisionModel does
    if (folder / DECODER_GRAPH).is_file():
        text = model.text_decoder
        decoder = OnnxTextDecoder(folder, text.config, text.generation_config, threads)
        model.text_decoder = decoder  # type: ignore[assignment]  # answers as BlipTextLMHeadModel does
    with warnings.catch_warnings():  # torch 2.10+ flags quantized tensors (and their storages) as deprecated
        warnings.simplefilter("ignore", UserWarning)
        saved = torch.load(folder / WEIGHTS_FILE, map_location="cpu", weights_only=True)
        state, buffers = saved["state_dict"], saved["buffers"]
        for name in sorted(k.removesuffix(PACKED) for k in state if k.endswith(PACKED)):
            _to_dynamic_int8(model, name)
    model.to_empty(device="cpu")  # storage for the fp32 rest, never touched before the file's tensors land
    model.load_state_dict(state, strict=True, assign=True)
    for name, tensor in buffers.items():
        owner, _, attr = name.rpartition(".")
        model.get_submodule(owner).register_buffer(attr, tensor, persistent=False)
    model.generation_config = GenerationConfig.from_pretrained(folder)
    return model.eval()


def same_outputs(loaded: Any, model: Any, pixels: torch.Tensor, input_ids: torch.Tensor) -> bool:
    """True when a model loaded from the file computes exactly the logits of the one it was saved from."""
    import torch

    with torch.inference_mode():
        want = model(pixel_values=pixels, input_ids=input_ids).logits
        got = loaded(pixel_values=pixels, input_ids=input_ids).logits
    return bool(torch.equal(want, got))


def _to_dynamic_int8(model: torch.nn.Module, name: str) -> None:
    """Replace the (meta) Linear `name` by a dynamic int8 Linear of its shape, to be filled by the file.

    Built 1x1 and then given its shape: `load_state_dict` packs the file's weights into it, and an empty
    (out x in) int8 weight packed per layer would add a second int8 model to the peak (~0.1 GB measured).
    """
    import torch

    owner, _, attr = name.rpartition(".")
    parent = model.get_submodule(owner)
    linear = getattr(parent, attr)
    if type(linear) is not torch.nn.Linear:
        raise ConfigError(f"int8 file holds packed weights for {name}, a {type(linear).__name__} in BLIP")
    int8 = torch.ao.nn.quantized.dynamic.Linear(1, 1, bias_=linear.bias is not None)
    int8.in_features, int8.out_features = linear.in_features, linear.out_features
    setattr(parent, attr, int8)
