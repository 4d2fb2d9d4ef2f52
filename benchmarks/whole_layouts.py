"""The approaches of the whole-photo benchmark (`--whole --approaches ...`) and how each is started.

- `legacy`, `immich`: the baselines of benchmarks.whole_baseline (one process, sequential loop).
- `split`: one process per capability, as docker-compose.yml ran them before `worker photo`: `mindsight
  worker clip`, `mindsight worker caption` and `mindsight worker face`, default settings (1 thread each).
- `photo-<N>p[-<M>t]`: N processes of `mindsight worker photo` (one process hosting the three photo
  capabilities, taking its queues in priority order: clip, face, caption), MINDSIGHT_THREADS=M (default
  1). The one docker-compose.yml runs by default (MINDSIGHT_PHOTO_WORKERS x MINDSIGHT_PHOTO_THREADS, read
  from the file: `compose_photo_layout`) says so in its title.

With `--gpu` (an NVIDIA machine whose torch sees CUDA), ours run as deploy/docker-compose.gpu.yml runs them:
one photo process by default and the router filling jobs of up to MINDSIGHT_GPU_BATCH_SIZE photos
(`compose_gpu_layout`, read from that file); the models go where MINDSIGHT_DEVICE=auto puts them (torch
on CUDA; an ONNX model on CUDA only where onnxruntime offers it). The legacy baseline takes CUDA as the
original runner did; Immich-style needs onnxruntime's CUDA provider and is left out.

Every layout of ours also runs the router, `mindsight worker text` and `mindsight serve embed-api` (idle),
so the peak RSS summed over the processes is the whole default stack's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from benchmarks.processes import Proc, ProcessGroup, new_port, wait_http_ok
from shared.device import auto_threads

Kind = Literal["legacy", "immich", "ours"]

WHOLE_APPROACHES = ("legacy", "immich", "split", "photo-2p", "photo-1p-2t")
"""The approaches `--whole` measures unless told otherwise."""

GPU_BASELINES = ("legacy",)
"""The baselines `--whole --gpu` can run: Immich-style is ONNX Runtime on CUDA (needs onnxruntime-gpu)."""

PHOTO_WORKER = ("worker", "photo")
"""One process hosting the three photo capabilities, clip's queue first, then face, then caption."""

SPLIT_WORKERS = (
    ("clip", ("worker", "clip")),
    ("caption", ("worker", "caption")),
    ("face", ("worker", "face")),
)
"""One process per photo capability (docker-compose.yml's layout before `worker photo`)."""

BASELINE_TITLES = {
    "legacy": "legacy runner's loop: CLIPProcessor + CLIPModel, BLIP generate, CLIP text features, all torch "
    "fp32; RetinaFace+dlib faces on a cv2 decode; full decode per capability, 1 photo at a time",
    "immich": "Immich-style: CLIP image ONNX Runtime fp32 batch 1, BLIP + CLIP text torch fp32 (Immich has "
    "no captions), RetinaFace+dlib faces; full PIL decode per capability, 1 photo at a time",
}

_PHOTO = re.compile(r"^photo-(\d+)p(?:-(\d+)t)?$")


def gpu_approaches() -> tuple[str, ...]:
    """What `--whole --gpu` measures unless told otherwise: the GPU baselines, deploy/docker-compose.gpu.yml's
    default layout, and one more photo process (a second replica helps when the GPU waits on decoding)."""
    n = (compose_gpu_layout() or (1, 0, 0))[0]
    layouts = [f"photo-{p}p-{compose_photo_threads(p) or 2}t" for p in (n, n + 1)]
    return (*GPU_BASELINES, *layouts)


class UnknownLayout(ValueError):
    """An approach name the whole-photo benchmark does not know."""


@dataclass(frozen=True)
class Layout:
    """One way of running the whole photo: a baseline, or a set of `mindsight` processes."""

    key: str
    kind: Kind
    title: str
    workers: tuple[tuple[str, tuple[str, ...]], ...] = ()
    """Ours: (process name, `mindsight` arguments) of each photo worker."""
    env: dict[str, str] = field(default_factory=dict)
    router_env: dict[str, str] = field(default_factory=dict)
    """Ours: settings of the router alone (on a GPU, the photos per job)."""

    @property
    def is_ours(self) -> bool:
        return self.kind == "ours"


def parse_layout(key: str, gpu: bool = False) -> Layout:
    """The approach named `key` (on a GPU with `gpu`); UnknownLayout with the accepted forms otherwise."""
    key = key.strip()
    if gpu and key in BASELINE_TITLES and key not in GPU_BASELINES:
        raise UnknownLayout(
            f"--gpu runs the baselines {', '.join(GPU_BASELINES)}: {key!r} needs onnxruntime-gpu"
        )
    if key in BASELINE_TITLES:
        title = BASELINE_TITLES[key] + (" (on CUDA: torch takes the GPU, as the runner chose)" if gpu else "")
        return Layout(key, key, title)  # type: ignore[arg-type]
    if key == "split":
        title = (
            "ours, default settings: worker clip + worker caption + worker face, 1 process x 1 thread "
            "each (compose's layout before `worker photo`)"
        )
        return Layout(key, "ours", title, tuple((f"worker-{n}", a) for n, a in SPLIT_WORKERS))
    match = _PHOTO.match(key)
    if match is None or int(match.group(1)) < 1 or int(match.group(2) or 1) < 1:
        raise UnknownLayout(f"unknown approach {key!r}: use legacy, immich, split or photo-<N>p[-<M>t]")
    n, threads = int(match.group(1)), match.group(2) or "1"
    title = f"ours, default settings: {n} x `worker photo` process(es) x {threads} thread(s)"
    workers = tuple((f"worker-photo-{i}", PHOTO_WORKER) for i in range(n))
    if gpu:
        gpu_layout = compose_gpu_layout()
        if gpu_layout is None:
            raise UnknownLayout(f"{GPU_COMPOSE_FILE} does not say its photo workers and batch size")
        title += f", router batch {gpu_layout[2]}"
        if (n, int(threads)) == gpu_layout[:2]:
            title += " (deploy/docker-compose.gpu.yml's default)"
        router = {"MINDSIGHT_BATCH_SIZE": str(gpu_layout[2])}
        return Layout(key, "ours", title, workers, {"MINDSIGHT_THREADS": threads}, router)
    if (n, int(threads)) == compose_photo_layout():
        title += " (docker-compose.yml's default)"
    return Layout(key, "ours", title, workers, {"MINDSIGHT_THREADS": threads})


COMPOSE_FILE = Path(__file__).resolve().parent.parent / "docker-compose.yml"
GPU_COMPOSE_FILE = COMPOSE_FILE.parent / "deploy" / "docker-compose.gpu.yml"


def compose_photo_layout(compose: Path = COMPOSE_FILE) -> tuple[int, int] | None:
    """(processes, threads) of `worker-photo` as docker-compose.yml defaults them on this machine, read from
    the file so the bench never names a stale default (threads `auto`: this machine's cores shared among
    the processes, shared.device.auto_threads); None when the file does not say."""
    found = _compose_defaults(compose, "MINDSIGHT_PHOTO_WORKERS")
    if found is None:
        return None
    processes = int(found[0])
    threads = compose_photo_threads(processes, compose)
    return None if threads is None else (processes, threads)


def compose_photo_threads(processes: int, compose: Path = COMPOSE_FILE) -> int | None:
    """The threads docker-compose.yml gives each of `processes` photo workers on this machine: its
    MINDSIGHT_PHOTO_THREADS default, `auto` being this machine's cores shared among them; None when the
    file does not say."""
    found = _compose_defaults(compose, "MINDSIGHT_PHOTO_THREADS")
    if found is None:
        return None
    return auto_threads(processes) if found[0] == "auto" else int(found[0])


def compose_gpu_layout(
    compose: Path = COMPOSE_FILE, gpu: Path = GPU_COMPOSE_FILE
) -> tuple[int, int, int] | None:
    """(processes, threads, router batch) of `worker-photo` under the GPU override: its replicas and
    MINDSIGHT_GPU_BATCH_SIZE from deploy/docker-compose.gpu.yml, the threads it keeps from
    docker-compose.yml; None when a file does not say."""
    override = _compose_defaults(gpu, "MINDSIGHT_PHOTO_WORKERS", "MINDSIGHT_GPU_BATCH_SIZE")
    threads = None if override is None else compose_photo_threads(int(override[0]), compose)
    if override is None or threads is None:
        return None
    return int(override[0]), threads, int(override[1])


def _compose_defaults(compose: Path, *names: str) -> list[str] | None:
    """The `${NAME:-N}` default (a number or `auto`) of each of `names` in a compose file; None when one
    is missing."""
    try:
        text = compose.read_text(encoding="utf-8")
    except OSError:
        return None
    found = [re.search(r"\$\{" + name + r":-(\d+|auto)\}", text) for name in names]
    if any(f is None for f in found):
        return None
    return [f.group(1) for f in found if f is not None]


@dataclass(frozen=True)
class BaselineModels:
    """What the baselines load: the CLIP and BLIP folders and the fp32 image graph (Immich-style)."""

    clip_dir: Path
    blip_dir: Path
    onnx_image_fp32: Path | None


def start_layout(
    layout: Layout, group: ProcessGroup, env: dict[str, str], models: BaselineModels, timeout: float
) -> list[Proc]:
    """Start `layout`'s processes and wait until they are ready; the processes whose stages are timed."""
    if not layout.is_ours:
        argv = ["-m", "benchmarks.whole_baseline", layout.kind, "--model-dir", str(models.clip_dir),
                "--caption-model-dir", str(models.blip_dir)]  # fmt: skip
        if layout.kind == "immich":
            if models.onnx_image_fp32 is None:
                raise RuntimeError("the Immich-style baseline needs the ONNX fp32 export of the CLIP model")
            argv += ["--onnx", str(models.onnx_image_fp32)]
        return [group.start(f"baseline-{layout.kind}", argv, env)]
    env = {**env, **layout.env}
    group.mindsight("router", "router", env={**env, **layout.router_env})
    workers = [
        group.mindsight(name, *args, env={**env, "MINDSIGHT_METRICS_PORT": str(new_port())})
        for name, args in layout.workers
    ]
    text = group.mindsight(
        "worker-text", "worker", "text", env={**env, "MINDSIGHT_METRICS_PORT": str(new_port())}
    )
    api_port = new_port()
    group.mindsight(
        "embed-api", "serve", "embed-api", "--host", "127.0.0.1", "--port", str(api_port), env=env
    )
    for proc in [*workers, text]:
        wait_http_ok(f"http://127.0.0.1:{proc.metrics_port}/readyz", group, timeout)
    wait_http_ok(f"http://127.0.0.1:{api_port}/readyz", group, timeout)
    return workers
