"""The machine a run was measured on, as the report prints it: CPU, cores, RAM, load, library versions."""

from __future__ import annotations

import importlib.metadata
import os
import platform
from pathlib import Path
from typing import Any

LIBRARIES = (
    "torch",
    "onnxruntime",
    "transformers",
    "numpy",
    "pillow",
    "simplejpeg",
    "rq",
    "redis",
    "uvicorn",
)


def _cpuinfo() -> tuple[str, list[str]]:
    model, flags = "unknown", list[str]()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return model, flags
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and model == "unknown":
            model = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = value.split()
    return model, flags


def _mem_total_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return float("nan")


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def load_average() -> list[float]:
    """1, 5 and 15 minute load averages."""
    return [round(x, 2) for x in os.getloadavg()]


def describe_machine(gpu: bool = False) -> dict[str, Any]:
    """Everything about this machine that changes the numbers; with `gpu`, the CUDA device too (GpuMissing
    when torch sees none)."""
    model, flags = _cpuinfo()
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "fma")
    return {
        **({"gpu": describe_gpu()} if gpu else {}),
        "cpu": model,
        "cores": len(os.sched_getaffinity(0)),
        "cpu_flags": [f for f in wanted if f in flags],
        "ram_gib": _mem_total_gib(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "libraries": {name: _version(name) for name in LIBRARIES},
        "load_average": load_average(),
    }


class GpuMissing(RuntimeError):
    """A GPU measurement was asked for on a machine whose torch sees no CUDA device."""


def describe_gpu() -> str:
    """`NVIDIA H200, 139.8 GiB, CUDA 13.0` for the first CUDA device torch sees."""
    try:
        import torch
    except ImportError as exc:
        raise GpuMissing("--gpu needs torch with CUDA (pip install '.[torch]' from a CUDA index)") from exc
    if not torch.cuda.is_available():
        raise GpuMissing(
            f"--gpu: torch {torch.__version__} sees no CUDA device (CUDA build: {torch.version.cuda})"
        )
    props = torch.cuda.get_device_properties(0)
    return f"{props.name}, {props.total_memory / 1024**3:.1f} GiB, CUDA {torch.version.cuda}"


def machine_line(machine: dict[str, Any]) -> str:
    """One line for the report header."""
    libs = machine["libraries"]
    gpu = f"GPU {machine['gpu']}; " if machine.get("gpu") else ""
    return (
        f"{gpu}{machine['cpu']}, {machine['cores']} cores ({', '.join(machine['cpu_flags']) or 'no AVX2'}), "
        f"{machine['ram_gib']} GiB RAM, {machine['os']}, Python {machine['python']}, torch {libs['torch']}, "
        f"onnxruntime {libs['onnxruntime']}, transformers {libs['transformers']}"
    )
