"""Memory of the text-only, ONNX-only and caption processes (issue 10, item 5), through their real start-up.

A text worker and the embed API need only the CLIP text tower; a process whose models all run on
onnxruntime (CLIP exports, the insightface face backend) must never import torch (~0.5 GB of RSS alone);
a caption worker with the int8 file that `models download` made never loads BLIP's fp32 weights (~1 GB).
Each case runs in a fresh interpreter started like the product starts it: the CLI/server module is
imported, then the context or app is built from the environment, then `sys.modules` is inspected.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from mindsight.cli.main import cli
from tests.fixtures.clip_models import TINY_CLIP_DIM

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "torchvision", "transformers", "open_clip")

WORKER = (
    f"HEAVY = {HEAVY!r}\n"
    + """
import json, sys
import mindsight.cli.main, mindsight.cli.worker_cmd  # what `mindsight worker ...` imports counts too
from shared.payloads import Capability
from shared.settings import load_settings
from workers.bootstrap import build_context

ctx = build_context(load_settings(env_file=None), [Capability(c) for c in sys.argv[1].split(",")])
models = dict(ctx.text_task.models) if ctx.text_task is not None else {}
caption = ctx.photo_tasks.get(Capability.CAPTION)
if caption is not None:
    models[caption.clip.label] = caption.clip  # the model its captions are embedded with
towers = {label: m.text.backbone.runtime_info.extra.get("towers_open") for label, m in models.items()}
hwm = [line for line in open("/proc/self/status") if line.startswith("VmHWM")]  # peak RSS since exec
rss_mib = int(hwm[0].split()[1]) // 1024 if hwm else None  # shown with -s, never asserted
print(json.dumps({"heavy": sorted(m for m in HEAVY if m in sys.modules), "towers": towers, "rss": rss_mib}))
"""
)

EMBED_API = (
    f"HEAVY = {HEAVY!r}\n"
    + """
import json, sys
import mindsight.cli.main, mindsight.cli.serve_cmd  # what `mindsight serve embed-api` imports counts too
from services.embed_api.server import build_app
from shared.settings import load_settings

app = build_app(load_settings(env_file=None))
models = app.state.service.models
towers = {label: m.text.backbone.runtime_info.extra.get("towers_open") for label, m in models.items()}
hwm = [line for line in open("/proc/self/status") if line.startswith("VmHWM")]  # peak RSS since exec
rss_mib = int(hwm[0].split()[1]) // 1024 if hwm else None  # shown with -s, never asserted
print(json.dumps({"heavy": sorted(m for m in HEAVY if m in sys.modules), "towers": towers, "rss": rss_mib}))
"""
)


def _run(script: str, env: dict[str, str], *args: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        env={**env, "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    print("peak RSS MiB:", result.pop("rss", None), args)  # a measurement (-s), not a test
    return result


@pytest.fixture(scope="module")
def onnx_env(tiny_clip_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Env of a CPU deployment whose CLIP models both have checked int8 exports (the default path)."""
    models_dir = tmp_path_factory.mktemp("models")
    env = {**tiny_clip_env, "MINDSIGHT_MODELS_DIR": str(models_dir)}
    args = ["--env-file", "/dev/null", "models", "export", "--all", "--int8"]
    result = CliRunner().invoke(cli, args, env=env)
    assert result.exit_code == 0, result.output
    return {
        **env,
        "MINDSIGHT_CLIP_RUNTIME": "auto",
        "MINDSIGHT_CLIP_PRECISION": "auto",
        "MINDSIGHT_DEVICE": "cpu",
        "REDIS_URL": "redis://127.0.0.1:6379/15",  # never connected to by building the context
        "PROCESSING_INTERNAL_TOKEN": "test-internal-token",
    }


def test_the_onnx_text_worker_opens_only_the_text_tower_and_never_imports_torch(
    onnx_env: dict[str, str],
) -> None:
    result = _run(WORKER, onnx_env, "text")
    assert result["heavy"] == []
    assert result["towers"] == {"tiny-hf": ["text"], "tiny-oc": ["text"]}


def test_the_onnx_embed_api_opens_only_the_text_tower_and_never_imports_torch(
    onnx_env: dict[str, str],
) -> None:
    result = _run(EMBED_API, onnx_env)
    assert result["heavy"] == []
    assert result["towers"] == {"tiny-hf": ["text"], "tiny-oc": ["text"]}


def test_a_caption_worker_opens_only_the_text_tower_of_its_onnx_clip_model(
    onnx_env: dict[str, str], tiny_blip_dir: Path
) -> None:
    env = {**onnx_env, "CAPTION_MODEL_NAME": str(tiny_blip_dir), "MINDSIGHT_CAPTION_PRECISION": "fp32"}
    result = _run(WORKER, env, "caption")
    assert result["towers"] == {"tiny-hf": ["text"]}  # BLIP runs on torch; its CLIP text model does not


def test_an_onnx_clip_and_face_worker_never_imports_torch(
    onnx_env: dict[str, str], insightface_model_root: Path
) -> None:
    env = {**onnx_env, "FACE_BACKEND": "insightface", "FACE_MODEL_DIR": str(insightface_model_root)}
    result = _run(WORKER, env, "clip,face")
    assert result["heavy"] == []


@pytest.mark.parametrize("process", ["worker", "embed_api"])
def test_a_torch_text_process_holds_no_image_tower(tiny_clip_env: dict[str, str], process: str) -> None:
    env = {
        **tiny_clip_env,
        "MINDSIGHT_CLIP_RUNTIME": "torch",
        "MINDSIGHT_DEVICE": "cpu",
        "PROCESSING_INTERNAL_TOKEN": "test-internal-token",
    }
    result = _run(TORCH_TOWERS, env, process)
    assert result["vision_modules"] == []  # no image-tower module alive once the process is ready
    assert result["text_dims"] == {"tiny-hf": [TINY_CLIP_DIM] * 2, "tiny-oc": [TINY_CLIP_DIM] * 2}


def test_text_only_chinese_clip_and_xlmr_open_clip_free_their_image_tower(
    tiny_chinese_clip_dir: Path, tiny_xlmr_open_clip_dir: Path
) -> None:
    env = {
        "CLIP_MODELS": f"cn={tiny_chinese_clip_dir},ml={tiny_xlmr_open_clip_dir}",
        "PROCESSING_DEFAULT_MODEL": "cn",
        "PROCESSING_EMBEDDING_DIM": str(TINY_CLIP_DIM),
        "CLIP_MODEL_DIMS": "",
        "MINDSIGHT_OFFLINE": "1",
        "MINDSIGHT_CLIP_RUNTIME": "torch",
        "MINDSIGHT_DEVICE": "cpu",
        "PROCESSING_INTERNAL_TOKEN": "test-internal-token",
    }
    result = _run(TORCH_TOWERS, env, "worker")
    assert result["vision_modules"] == []
    assert result["text_dims"] == {"cn": [TINY_CLIP_DIM] * 2, "ml": [TINY_CLIP_DIM] * 2}


CAPTION_START = """
import json
from transformers import BlipForConditionalGeneration

fp32_loads = []  # every BLIP read with its fp32 weights; none when the int8 file is taken
original = BlipForConditionalGeneration.from_pretrained.__func__


def counted(cls, *args, **kwargs):
    fp32_loads.append(str(args[0]))
    return original(cls, *args, **kwargs)


BlipForConditionalGeneration.from_pretrained = classmethod(counted)
import mindsight.cli.main, mindsight.cli.worker_cmd
from shared.payloads import Capability
from shared.settings import load_settings
from workers.bootstrap import build_context

ctx = build_context(load_settings(env_file=None), [Capability.CAPTION])
info = ctx.photo_tasks[Capability.CAPTION].captioner.runtime_info
hwm = [line for line in open("/proc/self/status") if line.startswith("VmHWM")]
rss_mib = int(hwm[0].split()[1]) // 1024 if hwm else None
print(json.dumps({"fp32_loads": len(fp32_loads), "precision": info.precision,
                  "from_file": "int8_file" in info.extra, "rss": rss_mib}))
"""


def test_a_caption_worker_with_the_int8_file_never_loads_blip_fp32(
    tiny_clip_env: dict[str, str], tiny_blip_dir: Path, tmp_path: Path
) -> None:
    env = {
        **tiny_clip_env,
        "CAPTION_MODEL_NAME": str(tiny_blip_dir),
        "MINDSIGHT_MODELS_DIR": str(tmp_path / "models"),
        "MINDSIGHT_CLIP_RUNTIME": "torch",
        "MINDSIGHT_DEVICE": "cpu",
        "REDIS_URL": "redis://127.0.0.1:6379/15",  # never connected to by building the context
        "PROCESSING_INTERNAL_TOKEN": "test-internal-token",
    }
    # Without the file, int8 is made at start from the fp32 model, which the process holds first.
    assert _run(CAPTION_START, env) == {"fp32_loads": 1, "precision": "int8", "from_file": False}
    args = ["--env-file", "/dev/null", "models", "download", "--caption"]
    made = CliRunner().invoke(cli, args, env=env)
    assert made.exit_code == 0 and "exported int8    caption" in made.output, made.output
    assert _run(CAPTION_START, env) == {"fp32_loads": 0, "precision": "int8", "from_file": True}


TORCH_TOWERS = """
import gc, json, sys
import torch
from shared.settings import load_settings

settings = load_settings(env_file=None)
if sys.argv[1] == "worker":
    from shared.payloads import Capability
    from workers.bootstrap import build_context

    models = build_context(settings, [Capability.TEXT]).text_task.models
else:
    from services.embed_api.server import build_app

    models = build_app(settings).state.service.models
gc.collect()
vision = sorted({type(m).__name__ for m in gc.get_objects()
                 if isinstance(m, torch.nn.Module) and "vision" in type(m).__name__.lower()})
dims = {label: [len(v) for v in m.text.predict(["a cat", "a dog"])] for label, m in models.items()}
print(json.dumps({"vision_modules": vision, "text_dims": dims}))
"""
