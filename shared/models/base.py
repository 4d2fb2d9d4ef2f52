"""One interface per capability. Models know nothing of Redis, RQ, HTTP or FastAPI.

Every backend is an `InferenceModel`: public `load()` (lazy, idempotent, thread-safe) and `predict()`
around abstract `_load()` / `_predict()`, after Immich's `InferenceModel`. Inputs are batches: batching
is where throughput comes from, so a single item is just a batch of one.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np
from PIL import Image

In = TypeVar("In")
Out = TypeVar("Out")


@dataclass(frozen=True)
class RuntimeInfo:
    """What a loaded model really runs on; logged at start-up and reported by /readyz."""

    runtime: str  # "torch", "onnxruntime", "dlib"
    device: str  # "cpu", "cuda:0", or the ONNX provider list, e.g. "CUDAExecutionProvider"
    precision: str = "fp32"
    extra: dict[str, Any] = field(default_factory=dict)


class LoadOnce(ABC):
    """`load()` runs `_load()` exactly once, even when several threads ask at the same time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loaded = False
        self.load_seconds: float | None = None

    @property
    def loaded(self) -> bool:
        return self._loaded

    def load(self) -> None:
        """Load once; later calls return at once."""
        if self._loaded:
            return
        with self._lock:
            if self._loaded:
                return
            start = time.perf_counter()
            self._load()
            self.load_seconds = time.perf_counter() - start
            self._loaded = True

    @abstractmethod
    def _load(self) -> None: ...


class InferenceModel(LoadOnce, Generic[In, Out]):
    """Lazy, thread-safe model lifecycle around a batch `predict`."""

    def predict(self, batch: list[In]) -> list[Out]:
        """Run the model on a batch (loading it first if needed); one output per input."""
        self.load()
        if not batch:
            return []
        out = self._predict(batch)
        if len(out) != len(batch):
            raise RuntimeError(f"{type(self).__name__} returned {len(out)} outputs for {len(batch)} inputs")
        return out

    @abstractmethod
    def _predict(self, batch: list[In]) -> list[Out]: ...

    @property
    @abstractmethod
    def runtime_info(self) -> RuntimeInfo: ...


class ImageEmbedder(InferenceModel[Image.Image, np.ndarray]):
    """RGB images -> L2-normalised float32 vectors of `dim`."""

    dim: int
    image_size: int
    """Side the model's preprocessing resizes to; decoders may decode at about this size."""


class TextEmbedder(InferenceModel[str, np.ndarray]):
    """Texts -> L2-normalised float32 vectors of `dim`, in the same space as the paired ImageEmbedder."""

    dim: int


class Captioner(InferenceModel[Image.Image, str]):
    """RGB images -> one caption each (may be empty)."""


@dataclass(frozen=True)
class Face:
    """One detected face, in the pixel frame of the image as the user sees it (after EXIF rotation)."""

    bbox: tuple[float, float, float, float]  # x1, y1, x2, y2
    score: float
    landmarks: list[tuple[float, float]]  # 5 points: eyes, nose, mouth corners
    embedding: np.ndarray  # L2-normalised


class FaceAnalyzer(InferenceModel[Image.Image, list[Face]]):
    """RGB images -> the faces in each."""

    dim: int


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation in float32; zero rows stay zero."""
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norm, 1e-12)
