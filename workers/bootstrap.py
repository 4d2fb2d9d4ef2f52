"""Build a worker process's warm context: Redis, gallery client, and the models of its capabilities."""

from __future__ import annotations

import json
import logging
import socket

import redis

from shared.device import onnx_providers, resolve_device, set_threads
from shared.gallery_client import GalleryClient
from shared.metrics import record_models
from shared.native_memory import cap_malloc_arenas
from shared.payloads import Capability
from shared.settings import Settings
from workers.dispatch import Dispatcher
from workers.photo_decoder import DECODE_CACHE_BYTES, PhotoDecoder
from workers.runtime import PauseControl, WorkerContext, install
from workers.tasks.base import PhotoTask, TextTask

log = logging.getLogger(__name__)


def build_context(
    settings: Settings, capabilities: list[Capability], name: str | None = None
) -> WorkerContext:
    """Load everything `capabilities` need, log what really runs where, and install the context."""
    connection = redis.Redis.from_url(settings.redis.url, health_check_interval=30)
    gallery = GalleryClient(settings.gallery)
    ctx = WorkerContext(
        settings=settings,
        connection=connection,
        gallery=gallery,
        dispatcher=Dispatcher(connection, settings.worker, settings.redis),
        decoder=photo_decoder(settings, capabilities),
        pause=PauseControl(settings.worker.gallery_pause_max_s),
        name=name or socket.gethostname(),
    )
    if capabilities:
        ctx.photo_tasks, ctx.text_task = load_tasks(settings, capabilities)
        _log_tasks(ctx)
    install(ctx)
    return ctx


def photo_decoder(settings: Settings, capabilities: list[Capability]) -> PhotoDecoder:
    """The decoder of a process hosting `capabilities`: a batch decodes on MINDSIGHT_THREADS threads, and
    a decode cache only where two photo capabilities can share a photo's decode."""
    photo_caps = set(capabilities) - {Capability.TEXT}
    cache = DECODE_CACHE_BYTES if len(photo_caps) > 1 else 0
    return PhotoDecoder(settings.paths.roots(), cache, threads=settings.worker.threads)


def _torch_needed(settings: Settings, capabilities: list[Capability]) -> bool:
    """False when every model this process runs is on onnxruntime or dlib."""
    from shared.models.clip.runtime import clip_needs_torch

    if Capability.CAPTION in capabilities:
        from shared.models.caption.blip_captioner import caption_needs_torch

        if caption_needs_torch(settings.caption, settings.store, settings.worker.device):
            return True
    if not {Capability.CLIP, Capability.TEXT, Capability.CAPTION} & set(capabilities):
        return False  # captions are embedded by CLIP's text tower: it decides for them too
    return clip_needs_torch(settings.clip, settings.store, settings.worker.device)


def load_tasks(
    settings: Settings, capabilities: list[Capability]
) -> tuple[dict[Capability, PhotoTask], TextTask | None]:
    """The tasks of `capabilities` with their models loaded, exactly as a worker process runs them.

    Also what the benchmark's `bare` approach runs (benchmarks.bare_loop), so the pipeline's overhead is
    measured against the same models, runtime, precision and threads.
    """
    from shared.models.clip.registry import load_clip_models

    cap_malloc_arenas()  # before the models' thread pools and the decode threads allocate
    pref = settings.worker.device
    if _torch_needed(settings, capabilities):
        device = resolve_device(pref)
        set_threads(settings.worker.threads)
    else:
        device = "cpu"  # only torch reads it; onnxruntime picks its providers from `pref`
    towers = (["image"] if Capability.CLIP in capabilities else []) + (
        ["text"] if {Capability.TEXT, Capability.CAPTION} & set(capabilities) else []
    )
    clip_models = {}
    photo_tasks: dict[Capability, PhotoTask] = {}
    text_task: TextTask | None = None
    if Capability.CLIP in capabilities or Capability.TEXT in capabilities:
        clip_models = load_clip_models(
            settings.clip, settings.store, device, settings.worker.threads, device_pref=pref, towers=towers
        )
    for cap in capabilities:
        match cap:
            case Capability.CLIP:
                from workers.tasks.clip_task import ClipTask

                photo_tasks[cap] = ClipTask(clip_models)
            case Capability.TEXT:
                from workers.tasks.text_task import ClipTextTask

                text_task = ClipTextTask(clip_models, settings.clip.label_for(None))
            case Capability.CAPTION:
                from shared.models.caption.blip_captioner import load_captioner
                from workers.tasks.caption_task import CaptionTask

                first = settings.clip.specs()[0]
                text_models = clip_models or load_clip_models(
                    settings.clip.model_copy(update={"models_raw": f"{first.label}={first.source}"}),
                    settings.store,
                    device,
                    settings.worker.threads,
                    device_pref=pref,
                    towers=["text"],  # captions are embedded as texts; no image tower needed
                )
                captioner = load_captioner(settings.caption, settings.store, device, settings.worker.threads)
                captioner.load()
                photo_tasks[cap] = CaptionTask(
                    captioner, text_models[first.label], settings.caption.model_name
                )
            case Capability.FACE:
                from shared.models.face.registry import load_face_analyzer
                from workers.tasks.face_task import FaceTask

                analyzer = load_face_analyzer(settings.face, onnx_providers(pref), settings.worker.threads)
                photo_tasks[cap] = FaceTask(analyzer, settings.face.model_label)
    return photo_tasks, text_task


def _log_tasks(ctx: WorkerContext) -> None:
    for cap, task in ctx.photo_tasks.items():
        log.info("%s ready: %s", cap.value, json.dumps(task.describe()))
        record_models(cap.value, task.describe())
    if ctx.text_task is not None:
        log.info("text ready: %s", json.dumps(ctx.text_task.describe()))
        record_models("text", ctx.text_task.describe())
