"""Where models run: the torch device and ONNX Runtime providers a MINDSIGHT_DEVICE preference allows.

torch and onnxruntime are imported lazily, so this module imports in processes that have neither.
"""

from __future__ import annotations

from typing import Literal

from shared.errors import ConfigError

DevicePref = Literal["auto", "cpu", "cuda"]

CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"


def resolve_device(pref: DevicePref) -> str:
    """The torch device string for `pref`: "cuda:0" when CUDA is usable and allowed, else "cpu"."""
    _check_pref(pref)
    if pref == "cpu":
        return "cpu"
    try:
        import torch
    except ImportError as exc:
        if pref == "cuda":
            raise ConfigError(
                "MINDSIGHT_DEVICE=cuda but torch is not installed (pip install '.[torch]')"
            ) from exc
        return "cpu"
    if torch.cuda.is_available():
        return "cuda:0"
    if pref == "cuda":
        built = torch.version.cuda or "none (CPU-only build)"
        raise ConfigError(
            f"MINDSIGHT_DEVICE=cuda but torch {torch.__version__} sees no CUDA device (torch CUDA: {built}); "
            "install a CUDA build of torch, expose the GPU to this container, or set MINDSIGHT_DEVICE=auto"
        )
    return "cpu"


def onnx_providers(pref: DevicePref) -> list[str]:
    """ONNX Runtime providers for `pref`: CUDA first when available and allowed, then CPU."""
    _check_pref(pref)
    if pref == "cpu":
        return [CPU_PROVIDER]
    import onnxruntime

    available = onnxruntime.get_available_providers()
    if CUDA_PROVIDER in available:
        return [CUDA_PROVIDER, CPU_PROVIDER]
    if pref == "cuda":
        raise ConfigError(
            f"MINDSIGHT_DEVICE=cuda but onnxruntime {onnxruntime.__version__} offers only {available}; "
            "install onnxruntime-gpu or set MINDSIGHT_DEVICE=auto"
        )
    return [CPU_PROVIDER]


def set_threads(n: int) -> None:
    """Set torch's intra-op thread count (MINDSIGHT_THREADS); a no-op where torch is not installed."""
    if n < 1:
        raise ConfigError(f"MINDSIGHT_THREADS must be at least 1, got {n}")
    try:
        import torch
    except ImportError:
        return
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


def _check_pref(pref: str) -> None:
    if pref not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"MINDSIGHT_DEVICE must be auto, cpu or cuda, got {pref!r}")
