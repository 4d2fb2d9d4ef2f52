"""Where models run: the torch device and ONNX Runtime providers a MINDSIGHT_DEVICE preference allows.

torch and onnxruntime are imported lazily, so this module imports in processes that have neither.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
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


CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
"""cgroup v2's CPU quota of this container: `<quota> <period>` in microseconds, or `max <period>`."""


def available_cores(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """The cores this process may use: its CPU affinity, capped by the container's CPU quota (compose's
    `cpus:`, a Kubernetes CPU limit) rounded up; at least 1."""
    cores = len(os.sched_getaffinity(0))
    try:
        quota, period = cpu_max.read_text().split()[:2]
        cores = min(cores, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):  # no cgroup v2 file, or `max`: no quota
        pass
    return max(1, cores)


def auto_threads(replicas: int, cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """MINDSIGHT_THREADS=auto: this process's share of the cores when `replicas` processes like it share
    them (MINDSIGHT_REPLICAS; compose passes MINDSIGHT_PHOTO_WORKERS); at least 1."""
    return max(1, available_cores(cpu_max) // max(1, replicas))


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
