"""The two baseline workers, each a loop like the legacy `clip_runner.py`: pop, decode, embed, post, repeat.

They consume the backend's list (REDIS_QUEUE_NAME) directly, one photo at a time, with no router and no
RQ in between, because that is how the legacy runner worked (BRPOP, so first in, first out; the legacy
BLPOP served the newest first, which changes no total). That is, if anything, cheaper per photo than our
router + RQ hop, so the comparison does not flatter us. Both decode the full image with PIL (EXIF
orientation honoured, so all approaches embed the same pixels) and post the same callback to the same
gallery with a keep-alive HTTP client.

- `hf-torch` (approach 1): transformers `CLIPProcessor` (its PIL backend, the default of the transformers
  4.x the legacy runner ran on) + `CLIPModel` in torch fp32 on the full image; torch's default threads.
- `ort-fp32` (approach 2): how Immich's ML service works: full PIL decode, PIL resize and centre crop,
  ONNX Runtime fp32 at batch 1 per request; ONNX Runtime's default threads.

Each photo's timers (popped at, decode, preprocess, inference, callback) go to the Redis list
`bench:timings`, which the harness reads after the run.
Run: `python -m benchmarks.baselines hf-torch|ort-fp32 --model-dir DIR [--onnx GRAPH]`.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import time
from pathlib import Path
from typing import Any, Protocol

import httpx
import numpy as np
import redis
from PIL import Image, ImageOps

from shared.device import resolve_device
from shared.models.base import l2_normalize
from shared.paths import resolve_photo_path
from shared.settings import Settings, load_settings

TIMINGS_KEY = "bench:timings"
"""Redis list of per-photo JSON timers written by the baseline workers."""

log = logging.getLogger("benchmarks.baselines")


class Embedder(Protocol):
    """One photo in, one vector out, with the seconds spent preprocessing and in the model."""

    runtime: str

    def embed(self, image: Image.Image) -> tuple[np.ndarray, float, float]: ...


class HfTorchEmbedder:
    """Approach 1: CLIPProcessor + CLIPModel, torch fp32, on the full-resolution image, on `device` (the
    legacy runner took CUDA whenever torch saw it: `shared.device.resolve_device("auto")`)."""

    runtime = "torch"

    def __init__(self, model_dir: Path, device: str = "cpu") -> None:
        import torch
        from transformers import CLIPModel, CLIPProcessor

        self.torch = torch
        self.device = device
        self.processor = CLIPProcessor.from_pretrained(model_dir, backend="pil")
        self.model = CLIPModel.from_pretrained(model_dir).eval().to(device)

    def embed(self, image: Image.Image) -> tuple[np.ndarray, float, float]:
        start = time.perf_counter()
        inputs = self.processor(images=image, return_tensors="pt")
        mid = time.perf_counter()
        with self.torch.inference_mode():
            out = self.model.get_image_features(pixel_values=inputs["pixel_values"].to(self.device))
        features = out if isinstance(out, self.torch.Tensor) else out.pooler_output
        vector = l2_normalize(features.float().cpu().numpy())[0]  # .cpu() waits for the GPU
        return vector, mid - start, time.perf_counter() - mid


class OrtFp32Embedder:
    """Approach 2: PIL resize + centre crop + normalise, then ONNX Runtime fp32 at batch 1."""

    runtime = "onnxruntime"

    def __init__(self, onnx_path: Path, model_dir: Path) -> None:
        import onnxruntime

        from shared.models.clip.preprocess import ClipImageTransform

        self.session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        cfg = json.loads((model_dir / "processor_config.json").read_text(encoding="utf-8"))
        cfg = cfg.get("image_processor", cfg)
        side, crop = int(cfg["size"]["shortest_edge"]), cfg["crop_size"]
        self.transform = ClipImageTransform(
            resize=side,
            crop=(int(crop["height"]), int(crop["width"])),
            mean=tuple(cfg["image_mean"]),
            std=tuple(cfg["image_std"]),
            resample=Image.Resampling(int(cfg.get("resample", 3))),
        )

    def embed(self, image: Image.Image) -> tuple[np.ndarray, float, float]:
        from shared.models.clip.preprocess import preprocess_images

        start = time.perf_counter()
        pixels = preprocess_images([image], self.transform)
        mid = time.perf_counter()
        out = self.session.run(None, {self.input_name: pixels})[0]
        return l2_normalize(out)[0], mid - start, time.perf_counter() - mid


class ClipRunnerLoop:
    """The legacy runner's loop around an `Embedder`; stops after the current photo on SIGTERM."""

    def __init__(self, settings: Settings, embedder: Embedder, source: str) -> None:
        self.settings = settings
        self.embedder = embedder
        self.source = source
        self.label = settings.clip.label_for(None)
        self.roots = settings.paths.roots()
        self.redis = redis.Redis.from_url(settings.redis.url)
        token = settings.gallery.require_internal_token()
        self.http = httpx.Client(
            base_url=settings.gallery.api_base_url, headers={"x-internal-token": token}, timeout=30
        )
        self.stopping = False

    def run(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "stopping", True))
        queue = self.settings.redis.photo_queue
        log.info("baseline %s consuming %s", self.embedder.runtime, queue)
        while not self.stopping:
            item = self.redis.brpop([queue], timeout=1)
            if item is None:
                continue
            popped = time.time()
            job = json.loads(item[1])
            if "clip" not in job.get("tasks", []):
                continue
            try:
                self.process(job, popped)
            except Exception as exc:  # the legacy runner's catch-all: record and go on
                log.exception("photo %s failed", job.get("photo_id"))
                self.redis.lpush(
                    self.settings.redis.photo_dlq, json.dumps({"payload": job, "error": str(exc)})
                )

    def process(self, job: dict[str, Any], popped: float) -> None:
        """Decode, embed and post one photo; record its timers."""
        start = time.perf_counter()
        path = resolve_photo_path(job["path"], self.roots)
        with Image.open(path) as img:
            image = ImageOps.exif_transpose(img.convert("RGB"))
        decoded = time.perf_counter()
        vector, preprocess_s, inference_s = self.embedder.embed(image)
        embedded = time.perf_counter()
        body = {
            "model": self.label,
            "modality": "image",
            "embedding": vector.tolist(),
            "ml_result": {"source": f"bench-baseline-{self.embedder.runtime}", "model_name": self.source},
            "processing_status": "done",
        }
        self.http.post(f"/api/internal/photos/{job['photo_id']}/ml_result", json=body).raise_for_status()
        posted = time.perf_counter()
        timings = {
            "photo_id": job["photo_id"], "popped": popped, "decode": decoded - start,
            "preprocess": preprocess_s, "inference": inference_s, "callback": posted - embedded,
        }  # fmt: skip
        self.redis.rpush(TIMINGS_KEY, json.dumps(timings))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.baselines", description=__doc__)
    parser.add_argument("kind", choices=["hf-torch", "ort-fp32"])
    parser.add_argument("--model-dir", type=Path, required=True, help="transformers CLIP folder")
    parser.add_argument("--onnx", type=Path, help="image-tower ONNX graph (ort-fp32)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per callback is not what is measured
    settings = load_settings(env_file=None)
    embedder: Embedder
    if args.kind == "hf-torch":
        embedder = HfTorchEmbedder(args.model_dir, resolve_device(settings.worker.device))
    else:
        if args.onnx is None:
            parser.error("ort-fp32 needs --onnx")
        embedder = OrtFp32Embedder(args.onnx, args.model_dir)
    ClipRunnerLoop(settings, embedder, str(args.model_dir)).run()


if __name__ == "__main__":
    main()
