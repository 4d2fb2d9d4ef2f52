"""CLIP on ONNX Runtime: an export folder (`mindsight models export`) served without torch.

Preprocessing is the shared numpy path; tokenization is `tokenizers` over the export's tokenizer.json.
The text graph runs only the positions up to the batch's longest end-of-text token (exact under CLIP's
causal mask), so a short query costs a fraction of the 77-token forward. Each tower is its own session:
the towers a process needs are opened at load, the other only if it is ever used (a CLIP worker never
holds the text weights, the text API never the image ones: ViT-B-32 fp32 is 350 + 250 MB).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from shared.device import CPU_PROVIDER, CUDA_PROVIDER
from shared.errors import ConfigError
from shared.models.base import RuntimeInfo, l2_normalize
from shared.models.clip.backbone import ClipBackbone, ClipImageEmbedder, ClipTextEmbedder, TokenBatch
from shared.models.onnx.manifest import EXPORT_FIX, OnnxManifest, read_manifest
from shared.models.onnx.session import open_session
from shared.models.onnx.tokenizer import OnnxTokenizer

log = logging.getLogger(__name__)

Tower = Literal["image", "text"]
TOWERS: tuple[Tower, ...] = ("image", "text")


class OnnxClip(ClipBackbone):
    """Both towers of an exported CLIP model, each an onnxruntime session on the best allowed provider."""

    family = "onnx"
    runtime = "onnxruntime"

    def __init__(
        self,
        folder: Path,
        providers: Sequence[str] = (CPU_PROVIDER,),
        *,
        threads: int = 1,
        max_tokens: int = 77,
        source: str | None = None,
        eager: Collection[str] = TOWERS,
        torch_sees_cuda: bool = False,
    ) -> None:
        super().__init__(source or str(folder), device="not loaded", max_tokens=max_tokens)
        if threads < 1:
            raise ConfigError(f"MINDSIGHT_THREADS must be at least 1, got {threads}")
        unknown = set(eager) - set(TOWERS)
        if unknown or not eager:
            raise ValueError(f"eager towers must be a non-empty subset of {TOWERS}, got {sorted(eager)}")
        self.folder = folder
        self.providers = list(providers)
        self.threads = threads
        self.eager = [t for t in TOWERS if t in eager]
        self.torch_sees_cuda = torch_sees_cuda
        self.manifest: OnnxManifest | None = None
        self.precision = "fp32"
        self._sessions: dict[str, Any] = {}
        self._session_lock = threading.Lock()
        self._tokenizer: OnnxTokenizer | None = None
        self._source_given = source is not None

    def _load(self) -> None:
        manifest = read_manifest(self.folder)
        self.manifest = manifest
        if not self._source_given:
            self.source = manifest.source  # callbacks report the model, not where its export lives
        self.precision = manifest.precision
        self.transform = manifest.transform
        self.image_size = manifest.transform.min_source_side
        self.dim = manifest.dim
        self.context_length = min(manifest.context_length, self.max_tokens)
        self._tokenizer = OnnxTokenizer(self.folder, manifest.tokenizer, self.context_length)
        for tower in self.eager:
            self._sessions[tower] = self._open(tower)

    def session(self, tower: Tower) -> Any:
        """The onnxruntime session of one tower, opened on first use."""
        found = self._sessions.get(tower)
        if found is not None:
            return found
        self.load()
        with self._session_lock:
            if tower not in self._sessions:
                self._sessions[tower] = self._open(tower)
            return self._sessions[tower]

    def tokenize(self, texts: Sequence[str]) -> TokenBatch:
        if self._tokenizer is None:
            raise RuntimeError("OnnxClip used before load()")
        return self._tokenizer(texts)

    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        session = self.session("image")
        feed = {session.get_inputs()[0].name: np.ascontiguousarray(pixels, dtype=np.float32)}
        return self._finish(session.run(None, feed)[0])  # InferenceSession.run is thread-safe

    def encode_tokens(self, tokens: TokenBatch) -> np.ndarray:
        # Positions after the longest text's end-of-text token cannot reach any pooled token under the
        # causal mask, so the graph (dynamic length) is fed only those before it.
        return self.encode_token_ids(tokens.ids[:, : max(tokens.needed, 1)])

    def encode_token_ids(self, ids: np.ndarray) -> np.ndarray:
        """Run the text graph on exactly these ids [N, L] (L up to the context length)."""
        session = self.session("text")
        feed = {session.get_inputs()[0].name: np.ascontiguousarray(ids, dtype=np.int64)}
        return self._finish(session.run(None, feed)[0])

    @property
    def runtime_info(self) -> RuntimeInfo:
        extra: dict[str, Any] = {"family": self.family, "source": self.source, "dim": self.dim}
        if self.manifest is not None:
            extra.update(
                exported_from=self.manifest.family,
                export=str(self.folder),
                threads=self.threads,
                towers_open=sorted(self._sessions),
            )
        return RuntimeInfo(runtime=self.runtime, device=self.device, precision=self.precision, extra=extra)

    def _finish(self, out: np.ndarray) -> np.ndarray:
        assert self.manifest is not None
        out = np.asarray(out, dtype=np.float32)
        return out if self.manifest.normalized else l2_normalize(out)

    def _open(self, tower: Tower) -> Any:
        assert self.manifest is not None
        path = self.folder / (self.manifest.image_file if tower == "image" else self.manifest.text_file)
        if not path.is_file():
            raise ConfigError(f"ONNX export {self.folder} lacks {path.name}; {EXPORT_FIX} again")
        session = open_session(
            path, self.providers, self.threads, fix=f"{EXPORT_FIX} again", int8=self.precision == "int8"
        )
        used = session.get_providers()[0]
        if self.device != used:
            self.device = used
            self._warn_on_fallback()
        return session

    def _warn_on_fallback(self) -> None:
        asked_cuda = CUDA_PROVIDER in self.providers
        if (asked_cuda or self.torch_sees_cuda) and self.device != CUDA_PROVIDER:
            why = (
                "the CUDA provider failed to initialise (CUDA/cuDNN libraries missing or mismatched?)"
                if asked_cuda
                else "this onnxruntime has no CUDA provider (install onnxruntime-gpu)"
            )
            log.warning(
                "!!! CLIP ONNX model %s runs on %s although a GPU is there: %s. Every photo is computed on "
                "the CPU, far slower than expected !!!",
                self.source,
                self.device,
                why,
            )


def onnx_clip_embedders(
    folder: Path,
    providers: Sequence[str],
    *,
    threads: int = 1,
    max_tokens: int = 77,
    source: str | None = None,
    eager: Collection[str] = TOWERS,
    torch_sees_cuda: bool = False,
) -> tuple[ClipImageEmbedder, ClipTextEmbedder]:
    """An image and a text embedder sharing one (not yet loaded) exported CLIP model."""
    backbone = OnnxClip(
        folder,
        providers,
        threads=threads,
        max_tokens=max_tokens,
        source=source,
        eager=eager,
        torch_sees_cuda=torch_sees_cuda,
    )
    return ClipImageEmbedder(backbone), ClipTextEmbedder(backbone)
