"""The whole-photo baselines: the legacy runner's loop for CLIP, caption and faces, and an Immich-style one.

Both pop the backend's list directly (benchmarks.baselines.ClipRunnerLoop: BRPOP, one photo at a time,
no router, no RQ) and handle a job `["thumbnail", "clip", "face"]` as the original `clip_runner.py` did,
capability after capability, each decoding the full image again:

- clip: full PIL decode, then the baseline's image embedder, post ml_result (modality image);
- caption (CAPTION_ENABLED): full PIL decode, `BlipProcessor` + `BlipForConditionalGeneration.generate`
  in torch fp32 (greedy, CAPTION_MAX_LENGTH / CAPTION_NUM_BEAMS, the settings the product reads), then the
  CLIP text features of the caption in torch fp32, post ml_result (modality caption, with the caption);
- face: full decode again (legacy: `cv2.imread`, as insightface's `app.get` is fed; Immich-style: PIL),
  the configured face backend (FACE_BACKEND, the product's own analyzer) on the full-resolution image,
  post /faces.

`legacy`: CLIP through transformers `CLIPProcessor` (PIL backend) + `CLIPModel` torch fp32, whose text
tower also embeds the captions. `immich`: CLIP image through ONNX Runtime fp32 at batch 1 (Immich's ML
service); Immich has no captions, so they run as in legacy, the caption's text embedded by the torch fp32
text tower alone (`CLIPTextModelWithProjection`). torch and ONNX Runtime keep their default threads.
Bodies are the gallery contract's typed bodies. Per-photo timers (per capability: decode, inference,
callback seconds) go to the Redis list `bench:timings` like the CLIP-only baselines'.
Run: `python -m benchmarks.whole_baseline legacy|immich --model-dir CLIP --caption-model-dir BLIP
[--onnx GRAPH]`.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from benchmarks.baselines import TIMINGS_KEY, ClipRunnerLoop, Embedder, HfTorchEmbedder, OrtFp32Embedder
from shared.device import resolve_device
from shared.gallery_contract import BBox, FaceIn, FacesIn, MlResultIn
from shared.models.base import FaceAnalyzer, l2_normalize
from shared.models.face.registry import build_face_analyzer
from shared.paths import resolve_photo_path
from shared.settings import Settings, load_settings

log = logging.getLogger("benchmarks.whole_baseline")


class TorchCaptioner:
    """BLIP in torch fp32 plus the CLIP text features of its caption, as the legacy runner did both, on
    `device` (CUDA whenever torch sees it, as the legacy runner chose)."""

    def __init__(
        self, blip_dir: Path, clip_dir: Path, clip_model: Any | None, settings: Settings, device: str
    ) -> None:
        import torch
        from transformers import (
            AutoTokenizer,
            BlipForConditionalGeneration,
            BlipProcessor,
            CLIPTextModelWithProjection,
        )

        self.torch = torch
        self.device = device
        self.processor = BlipProcessor.from_pretrained(blip_dir)
        self.blip = BlipForConditionalGeneration.from_pretrained(blip_dir).eval().to(device)
        self.tokenizer = AutoTokenizer.from_pretrained(clip_dir)
        # legacy reuses its CLIPModel; Immich-style has no torch CLIP, so only the text tower is loaded
        self.clip = clip_model or _text_tower(clip_dir, CLIPTextModelWithProjection).to(device)
        self.generate_args = {
            "max_length": settings.caption.max_length,
            "num_beams": settings.caption.num_beams,
        }

    def caption(self, image: Image.Image) -> tuple[str, np.ndarray]:
        """The caption of `image` and its L2-normalised CLIP text embedding."""
        pixels = self.processor(images=image, return_tensors="pt")["pixel_values"].to(self.device)
        with self.torch.inference_mode():
            tokens = self.blip.generate(pixel_values=pixels, **self.generate_args)
            caption = self.processor.batch_decode(tokens, skip_special_tokens=True)[0].strip()
            text = self.tokenizer([caption], padding=True, truncation=True, return_tensors="pt").to(
                self.device
            )
            if hasattr(self.clip, "get_text_features"):
                out = self.clip.get_text_features(**text)
            else:
                out = self.clip(**text).text_embeds
        features = out if isinstance(out, self.torch.Tensor) else out.pooler_output
        return caption, l2_normalize(features.float().cpu().numpy())[0]


class WholePhotoLoop(ClipRunnerLoop):
    """ClipRunnerLoop's BRPOP loop, each photo going through clip, caption and face in turn."""

    def __init__(
        self, settings: Settings, embedder: Embedder, source: str, captioner: TorchCaptioner | None,
        faces: FaceAnalyzer, face_decode: str,
    ) -> None:  # fmt: skip
        super().__init__(settings, embedder, source)
        self.captioner = captioner
        self.faces = faces
        self.face_decode = face_decode
        self.ml_result = {"source": f"bench-baseline-{embedder.runtime}", "model_name": source}

    def process(self, job: dict[str, Any], popped: float) -> None:
        """All of a photo's capabilities, one after the other; timers recorded per capability."""
        path = resolve_photo_path(job["path"], self.roots)
        timings: dict[str, Any] = {"photo_id": job["photo_id"], "popped": popped}
        if "clip" in job["tasks"]:
            timings["clip"] = self._clip(job["photo_id"], path)
            if self.captioner is not None:
                timings["caption"] = self._caption(job["photo_id"], path)
        if "face" in job["tasks"] or "faces" in job["tasks"]:
            timings["face"] = self._face(job["photo_id"], path)
        self.redis.rpush(TIMINGS_KEY, json.dumps(timings))

    def _post(self, route: str, body: MlResultIn | FacesIn) -> None:
        self.http.post(route, json=body.wire()).raise_for_status()

    def _clip(self, photo_id: int, path: Path) -> dict[str, float]:
        start = time.perf_counter()
        image = _pil_decode(path)
        decoded = time.perf_counter()
        vector, _, _ = self.embedder.embed(image)
        done = time.perf_counter()
        body = MlResultIn(
            model=self.label, modality="image", embedding=vector.tolist(), ml_result=self.ml_result,
            processing_status="done",
        )  # fmt: skip
        self._post(f"/api/internal/photos/{photo_id}/ml_result", body)
        return _timers(start, decoded, done)

    def _caption(self, photo_id: int, path: Path) -> dict[str, float]:
        assert self.captioner is not None
        start = time.perf_counter()
        image = _pil_decode(path)
        decoded = time.perf_counter()
        caption, vector = self.captioner.caption(image)
        done = time.perf_counter()
        body = MlResultIn(
            model=self.label, modality="caption", embedding=vector.tolist(), caption=caption,
            ml_result={**self.ml_result, "caption_model": "blip-torch-fp32"}, processing_status="done",
        )  # fmt: skip
        self._post(f"/api/internal/photos/{photo_id}/ml_result", body)
        return _timers(start, decoded, done)

    def _face(self, photo_id: int, path: Path) -> dict[str, float]:
        start = time.perf_counter()
        image = _cv2_decode(path) if self.face_decode == "cv2" else _pil_decode(path)
        decoded = time.perf_counter()
        found = self.faces.predict([image])[0]
        done = time.perf_counter()
        label = self.settings.face.model_label
        faces = [
            FaceIn(
                embedding=f.embedding.tolist(), model=label, score=float(f.score),
                bbox=BBox(x1=f.bbox[0], y1=f.bbox[1], x2=f.bbox[2], y2=f.bbox[3]),
                landmarks=[[float(x), float(y)] for x, y in f.landmarks],
            )
            for f in found
        ]  # fmt: skip
        self._post(f"/api/internal/photos/{photo_id}/faces", FacesIn(faces=faces))
        return _timers(start, decoded, done)


def _text_tower(clip_dir: Path, cls: Any) -> Any:
    """The text tower and its projection alone from a CLIPModel folder (the projection's size is the
    CLIPConfig's, which the text config does not carry)."""
    from transformers import CLIPConfig

    config = CLIPConfig.from_pretrained(clip_dir)
    text: Any = config.text_config
    text.projection_dim = config.projection_dim
    return cls.from_pretrained(clip_dir, config=text).eval()


def _timers(start: float, decoded: float, done: float) -> dict[str, float]:
    return {"decode": decoded - start, "inference": done - decoded, "callback": time.perf_counter() - done}


def _pil_decode(path: Path) -> Image.Image:
    """The full image, EXIF orientation applied, as every baseline decodes it."""
    with Image.open(path) as img:
        return ImageOps.exif_transpose(img.convert("RGB"))


def _cv2_decode(path: Path) -> Image.Image:
    """The full image as `cv2.imread` gives it (EXIF orientation applied by OpenCV), in RGB."""
    import cv2

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"cv2 cannot read {path}")
    return Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.whole_baseline", description=__doc__)
    parser.add_argument("kind", choices=["legacy", "immich"])
    parser.add_argument("--model-dir", type=Path, required=True, help="transformers CLIP folder")
    parser.add_argument("--caption-model-dir", type=Path, required=True, help="transformers BLIP folder")
    parser.add_argument("--onnx", type=Path, help="image-tower ONNX fp32 graph (immich)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    settings = load_settings(env_file=None)
    device = resolve_device(settings.worker.device)  # "auto": CUDA when torch sees it, as legacy chose
    embedder: Embedder
    if args.kind == "legacy":
        embedder = HfTorchEmbedder(args.model_dir, device)
        clip_model = embedder.model
    else:
        if args.onnx is None:
            parser.error("immich needs --onnx")
        embedder, clip_model = OrtFp32Embedder(args.onnx, args.model_dir), None
    captioner = None
    if settings.caption.enabled:
        captioner = TorchCaptioner(args.caption_model_dir, args.model_dir, clip_model, settings, device)
    faces = build_face_analyzer(settings.face)
    faces.load()
    decode = "cv2" if args.kind == "legacy" else "pil"
    WholePhotoLoop(settings, embedder, str(args.model_dir), captioner, faces, decode).run()


if __name__ == "__main__":
    main()
