"""CLIP on ONNX Runtime: both tiny families exported by the CLI, loaded by the registry, checked vs torch."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from skimage import data

from mindsight.cli.main import cli
from shared.device import CPU_PROVIDER, CUDA_PROVIDER
from shared.errors import ConfigError
from shared.models.clip.backbone import ClipBackbone
from shared.models.clip.onnx_backend import OnnxClip
from shared.models.clip.registry import ClipFamily, ClipModel, load_clip_models
from shared.models.onnx.manifest import MANIFEST_NAME, read_manifest
from shared.settings import Settings
from tests.fixtures.clip_models import TINY_CLIP_DIM

LABELS = ("tiny-hf", "tiny-oc")
TEXTS = [
    "a photo of an astronaut",
    "cat",
    "",
    "it’s a “quoted” caf\u00e9 &amp; more",
    "an extremely " + "long " * 80 + "caption",
]


@dataclass(frozen=True)
class Exports:
    models_dir: Path
    output: str


@pytest.fixture(scope="module")
def exports(tiny_clip_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Exports:
    """Both tiny models exported once, fp32 and int8, by `mindsight models export --all --int8`."""
    models_dir = tmp_path_factory.mktemp("models")
    env = {
        **tiny_clip_env,
        "MINDSIGHT_MODELS_DIR": str(models_dir),
        # What the workers are set to must not change what is exported: torch fp32, whole context.
        "MINDSIGHT_CLIP_RUNTIME": "onnx",
        "MINDSIGHT_CLIP_PRECISION": "int8",
        "MINDSIGHT_MAX_TEXT_TOKENS": "16",
    }
    args = ["--env-file", "/dev/null", "models", "export", "--all", "--int8"]
    result = CliRunner().invoke(cli, args, env=env)
    assert result.exit_code == 0, result.output
    return Exports(models_dir, result.output)


@pytest.fixture(scope="module")
def photos() -> list[Image.Image]:
    astronaut = Image.fromarray(data.astronaut())
    return [
        astronaut,
        astronaut.resize((301, 225)),
        Image.fromarray(data.chelsea()),
        Image.fromarray(data.coffee()),
    ]


@pytest.fixture
def onnx_models(
    make_settings: Callable[..., Settings], tiny_clip_env: dict[str, str], exports: Exports
) -> Callable[..., dict[str, ClipModel]]:
    """Factory: the tiny models loaded through load_clip_models with extra env (runtime onnx by default)."""

    def load(**env: str) -> dict[str, ClipModel]:
        base = {
            **tiny_clip_env,
            "MINDSIGHT_MODELS_DIR": str(exports.models_dir),
            "MINDSIGHT_CLIP_RUNTIME": "onnx",
            "MINDSIGHT_CLIP_PRECISION": "fp32",  # auto would take the int8 exports (tests/test_cpu_int8.py)
        }
        settings = make_settings(**{**base, **env})
        return load_clip_models(settings.clip, settings.store, device="cpu", threads=1)

    return load


def cosines(a: list[np.ndarray], b: list[np.ndarray]) -> np.ndarray:
    return np.array([float(x @ y) for x, y in zip(a, b, strict=True)])


def backbone(model: ClipModel) -> ClipBackbone:
    return model.image.backbone  # type: ignore[attr-defined]


def test_export_writes_self_contained_checked_folders(exports: Exports) -> None:
    assert exports.output.count("fp32 export ready") == 2 and exports.output.count("int8 export ready") == 2
    assert "cosine image vs fp32" in exports.output and "tokenizer ids equal: True" in exports.output
    for label in LABELS:
        for suffix, precision in (("", "fp32"), ("-int8", "int8")):
            folder = exports.models_dir / "onnx" / f"{label}{suffix}"
            assert {p.name for p in folder.iterdir()} == {
                "image.onnx",
                "image.onnx.data",  # weights beside the graph: onnxruntime maps them (EXTERNAL_WEIGHTS)
                "text.onnx",
                "text.onnx.data",
                "tokenizer.json",
                MANIFEST_NAME,
            }
            for graph in ("image.onnx", "text.onnx"):  # readable by whoever may read the graph
                mode = (folder / graph).stat().st_mode
                assert (folder / f"{graph}.data").stat().st_mode == mode, (folder, graph)
            manifest = read_manifest(folder)
            raw = json.loads((folder / MANIFEST_NAME).read_text())
            assert (
                manifest.label == label and manifest.precision == precision and manifest.dim == TINY_CLIP_DIM
            )
            assert manifest.family == ("transformers" if label == "tiny-hf" else "open_clip")
            assert manifest.context_length == 77 and manifest.opset == 18
            assert raw["transform"]["crop"] == [32, 32] and raw["transform"]["resample"] == "bicubic"
            assert manifest.tokenizer.clean == ("none" if label == "tiny-hf" else "open_clip")
            checks = manifest.checks
            assert checks["passed"] and checks["tokenizer_ids_equal"] and checks["preprocess_equal"]
            assert checks["photos"] == ["skimage:astronaut", "skimage:chelsea", "skimage:coffee"]
            if precision == "fp32":
                assert checks["image_cosine_vs_torch"]["min"] >= 0.9999
                assert checks["text_short_batch_cosine_vs_torch_full_context"]["min"] >= 0.9999
                assert int(checks["text_short_batch_positions_run"].split()[0]) < 30
            else:
                assert (
                    checks["quantization"]["op_types"] == ["MatMul"]
                    and checks["quantization"]["reduce_range"]
                )
                assert 0.99 <= checks["image_cosine_vs_fp32"]["min"] < 1.0
                assert 0.99 <= checks["text_cosine_vs_fp32"]["min"] < 1.0


def test_onnx_fp32_matches_torch(
    onnx_models: Callable[..., dict[str, ClipModel]], tiny_clip_models: dict[str, ClipModel], photos: list
) -> None:
    models = onnx_models()
    for label in LABELS:
        onnx, torch_model = models[label], tiny_clip_models[label]
        assert onnx.family is ClipFamily.ONNX and onnx.dim == TINY_CLIP_DIM
        assert onnx.source == torch_model.source  # callbacks report the model, not the export folder
        assert np.array_equal(backbone(onnx).preprocess(photos), backbone(torch_model).preprocess(photos))
        assert np.array_equal(backbone(onnx).tokenize(TEXTS).ids, backbone(torch_model).tokenize(TEXTS).ids)
        assert cosines(onnx.image.predict(photos), torch_model.image.predict(photos)).min() >= 0.9999
        assert cosines(onnx.text.predict(TEXTS), torch_model.text.predict(TEXTS)).min() >= 0.9999
        for v in onnx.image.predict(photos[:1]) + onnx.text.predict(TEXTS[:1]):
            assert v.dtype == np.float32 and abs(float(np.linalg.norm(v)) - 1) < 1e-5


def test_onnx_int8_is_close_to_fp32(
    onnx_models: Callable[..., dict[str, ClipModel]], photos: list, capsys: pytest.CaptureFixture[str]
) -> None:
    fp32, int8 = onnx_models(), onnx_models(MINDSIGHT_CLIP_PRECISION="int8")
    for label in LABELS:
        assert int8[label].runtime_info.precision == "int8" and fp32[label].runtime_info.precision == "fp32"
        image = cosines(int8[label].image.predict(photos), fp32[label].image.predict(photos))
        text = cosines(int8[label].text.predict(TEXTS), fp32[label].text.predict(TEXTS))
        with capsys.disabled():
            print(f"\n{label} int8 vs fp32 cosine: image min {image.min():.5f}, text min {text.min():.5f}")
        assert 0.99 <= image.min() < 1.0 and 0.99 <= text.min() < 1.0  # rounded, not broken, not fp32


def test_text_fed_to_the_longest_token_equals_the_full_77(
    onnx_models: Callable[..., dict[str, ClipModel]],
) -> None:
    for model in onnx_models().values():
        clip = backbone(model)
        assert isinstance(clip, OnnxClip)
        short = clip.tokenize(TEXTS[:3])
        assert short.ids.shape[1] == 77 and short.needed < 10
        np.testing.assert_allclose(clip.encode_tokens(short), clip.encode_token_ids(short.ids), atol=1e-6)
        # A short text gives the same vector alone (7 positions) and next to a 77-token one.
        alone = model.text.predict([TEXTS[0]])[0]
        np.testing.assert_allclose(model.text.predict([TEXTS[0], TEXTS[-1]])[0], alone, atol=1e-5)


def test_max_text_tokens_caps_the_onnx_context(onnx_models: Callable[..., dict[str, ClipModel]]) -> None:
    for model in onnx_models(MINDSIGHT_MAX_TEXT_TOKENS="16").values():
        tokens = backbone(model).tokenize(["word " * 50])
        assert tokens.ids.shape == (1, 16) and tokens.ids[0, 15] == 49407 and tokens.needed == 16


def test_runtime_info_reports_the_provider_in_use(onnx_models: Callable[..., dict[str, ClipModel]]) -> None:
    for model in onnx_models().values():
        info = model.runtime_info
        clip = backbone(model)
        assert isinstance(clip, OnnxClip)
        assert (
            info.runtime == "onnxruntime"
            and info.device == CPU_PROVIDER == clip.session("image").get_providers()[0]
        )
        assert info.extra["exported_from"] in ("transformers", "open_clip") and info.extra["threads"] == 1
        options = clip.session("text").get_session_options()
        assert options.intra_op_num_threads == 1 and options.inter_op_num_threads == 1


def test_clip_models_may_name_an_export_folder(
    make_settings: Callable[..., Settings], tiny_clip_env: dict[str, str], exports: Exports, photos: list
) -> None:
    folder = exports.models_dir / "onnx" / "tiny-oc-int8"
    settings = make_settings(
        **{**tiny_clip_env, "CLIP_MODELS": f"mine={folder}", "MINDSIGHT_CLIP_RUNTIME": "auto"}
    )
    model = load_clip_models(settings.clip, settings.store, device="cpu")["mine"]
    assert model.family is ClipFamily.ONNX and model.runtime_info.precision == "int8"
    assert model.source == read_manifest(folder).source != str(folder)
    settings = make_settings(
        **{**tiny_clip_env, "CLIP_MODELS": f"mine={folder}", "MINDSIGHT_CLIP_RUNTIME": "torch"}
    )
    with pytest.raises(ConfigError, match="is an ONNX export but MINDSIGHT_CLIP_RUNTIME=torch"):
        load_clip_models(settings.clip, settings.store, device="cpu")


def test_runtime_setting_picks_the_backend(
    make_settings: Callable[..., Settings], tiny_clip_env: dict[str, str], exports: Exports, tmp_path: Path
) -> None:
    def families(**env: str) -> list[ClipFamily]:
        settings = make_settings(**{**tiny_clip_env, **env})
        return [m.family for m in load_clip_models(settings.clip, settings.store, device="cpu").values()]

    here, empty = str(exports.models_dir), str(tmp_path / "empty")
    assert families(MINDSIGHT_MODELS_DIR=here, MINDSIGHT_CLIP_RUNTIME="auto") == [ClipFamily.ONNX] * 2
    assert families(MINDSIGHT_MODELS_DIR=here, MINDSIGHT_CLIP_RUNTIME="torch") == [
        ClipFamily.TRANSFORMERS,
        ClipFamily.OPEN_CLIP,
    ]
    assert families(MINDSIGHT_MODELS_DIR=empty, MINDSIGHT_CLIP_RUNTIME="auto")[0] is ClipFamily.TRANSFORMERS
    for precision, flag in (("fp32", ""), ("int8", " --int8")):
        settings = make_settings(
            **tiny_clip_env,
            MINDSIGHT_MODELS_DIR=empty,
            MINDSIGHT_CLIP_RUNTIME="onnx",
            MINDSIGHT_CLIP_PRECISION=precision,
        )
        with pytest.raises(
            ConfigError, match=f"no {precision} ONNX export .*`mindsight models export --label tiny-hf{flag}`"
        ):
            load_clip_models(settings.clip, settings.store, device="cpu")
    settings = make_settings(**tiny_clip_env, MINDSIGHT_CLIP_RUNTIME="torch", MINDSIGHT_CLIP_PRECISION="int8")
    with pytest.raises(ConfigError, match="int8 needs ONNX Runtime"):
        load_clip_models(settings.clip, settings.store, device="cpu")


def test_an_export_of_another_source_is_not_used(
    make_settings: Callable[..., Settings], tiny_clip_env: dict[str, str], exports: Exports, tmp_path: Path
) -> None:
    other = tmp_path / "copy-of-tiny-oc"
    other.symlink_to(Path(tiny_clip_env["CLIP_MODELS"].split("tiny-oc=")[1]))
    env = {
        **tiny_clip_env,
        "CLIP_MODELS": f"tiny-oc={other}",
        "MINDSIGHT_MODELS_DIR": str(exports.models_dir),
    }
    with pytest.raises(
        ConfigError, match="was made from .* but CLIP_MODELS gives tiny-oc=.*export --label tiny-oc"
    ):
        settings = make_settings(**env, MINDSIGHT_CLIP_RUNTIME="onnx")
        load_clip_models(settings.clip, settings.store, device="cpu")
    settings = make_settings(**env, MINDSIGHT_CLIP_RUNTIME="auto")
    assert (
        load_clip_models(settings.clip, settings.store, device="cpu")["tiny-oc"].family
        is ClipFamily.OPEN_CLIP
    )


def test_only_the_towers_asked_for_are_opened(
    make_settings: Callable[..., Settings], tiny_clip_env: dict[str, str], exports: Exports
) -> None:
    settings = make_settings(
        **tiny_clip_env, MINDSIGHT_MODELS_DIR=str(exports.models_dir), MINDSIGHT_CLIP_RUNTIME="onnx"
    )
    model = load_clip_models(settings.clip, settings.store, device="cpu", towers=("text",))["tiny-oc"]
    assert model.runtime_info.extra["towers_open"] == ["text"] and model.runtime_info.device == CPU_PROVIDER
    assert model.image.predict([Image.new("RGB", (40, 40))])[0].shape == (TINY_CLIP_DIM,)  # opened on use
    assert model.runtime_info.extra["towers_open"] == ["image", "text"]


def test_cpu_fallback_on_a_gpu_box_is_loud(exports: Exports, caplog: pytest.LogCaptureFixture) -> None:
    folder = exports.models_dir / "onnx" / "tiny-oc"
    import onnxruntime

    if CUDA_PROVIDER in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime really has CUDA")
    with caplog.at_level(logging.WARNING):
        asked = OnnxClip(folder, [CUDA_PROVIDER, CPU_PROVIDER])
        asked.load()  # onnxruntime drops the provider it does not have and runs on the CPU
    assert asked.runtime_info.device == CPU_PROVIDER
    assert "runs on CPUExecutionProvider although a GPU is there" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        OnnxClip(folder, [CPU_PROVIDER], torch_sees_cuda=True).load()
    assert "install onnxruntime-gpu" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        OnnxClip(folder, [CPU_PROVIDER]).load()
    assert "GPU" not in caplog.text


NO_TORCH = """
import sys
for name in ("torch", "torchvision", "transformers", "open_clip", "onnx", "onnxscript"):
    sys.modules[name] = None  # any import of these now raises ImportError
from PIL import Image
from shared.models.clip.registry import load_clip_models
from shared.settings import load_settings
settings = load_settings(env_file=None)
models = load_clip_models(settings.clip, settings.store, device="cpu")
for model in models.values():
    assert model.runtime_info.runtime == "onnxruntime", model.runtime_info
    assert model.image.predict([Image.new("RGB", (64, 48), "red")])[0].shape == (32,)
    assert model.text.predict(["a red square"])[0].shape == (32,)
print("ok", sorted(models))
"""


def test_the_onnx_path_never_imports_torch(tiny_clip_env: dict[str, str], exports: Exports) -> None:
    env = {
        **tiny_clip_env,
        "MINDSIGHT_MODELS_DIR": str(exports.models_dir),
        "MINDSIGHT_CLIP_RUNTIME": "onnx",
        "PATH": "/usr/bin:/bin",
    }
    done = subprocess.run(
        [sys.executable, "-c", NO_TORCH],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).parents[1],
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ok ['tiny-hf', 'tiny-oc']" in done.stdout


def test_only_backends_with_the_export_interface_are_exported(
    tiny_clip_models: dict[str, ClipModel], exports: Exports
) -> None:
    """The torch backends implement `ExportableClip`; an ONNX backbone does not and is refused by name."""
    from shared.models.onnx.exportable import ExportableClip, as_exportable

    for model in tiny_clip_models.values():
        assert isinstance(model.backbone, ExportableClip)
    onnx_backbone = OnnxClip(exports.models_dir / "onnx" / "tiny-hf", [CPU_PROVIDER])
    with pytest.raises(ConfigError, match="cannot be exported"):
        as_exportable(onnx_backbone)


def test_export_cli_usage_errors(tiny_clip_env: dict[str, str], tmp_path: Path) -> None:
    env = {**tiny_clip_env, "MINDSIGHT_MODELS_DIR": str(tmp_path)}
    base = ["--env-file", "/dev/null", "models", "export"]
    result = CliRunner().invoke(cli, base, env=env)
    assert result.exit_code == 2 and "--label LABEL (repeatable) or --all" in result.output
    result = CliRunner().invoke(cli, [*base, "--label", "nope"], env=env)
    assert (
        result.exit_code == 2 and "not in CLIP_MODELS: nope (configured: tiny-hf, tiny-oc)" in result.output
    )
    assert not (tmp_path / "onnx").exists()


@pytest.mark.slow
def test_real_size_vit_b_32_exports_within_tolerance(tmp_path: Path) -> None:
    """open_clip's ViT-B-32 architecture (random weights, 151M parameters): export and check in fp32."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    from shared.models.onnx.export import export_clip
    from shared.settings import ClipSettings, ModelStoreSettings

    source = tmp_path / "vit-b-32"
    source.mkdir()
    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32", pretrained=None)
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()},
        str(source / "open_clip_model.safetensors"),
    )
    preprocess = {"mean": list(open_clip.OPENAI_DATASET_MEAN), "std": list(open_clip.OPENAI_DATASET_STD)}
    config = {"model_cfg": open_clip.get_model_config("ViT-B-32"), "preprocess_cfg": preprocess}
    (source / "open_clip_config.json").write_text(json.dumps(config))
    del model
    clip = ClipSettings(models_raw=f"b32={source}", embedding_dim=512, _env_file=None)
    store = ModelStoreSettings(models_dir=tmp_path / "models", offline=True, _env_file=None)
    (result,) = export_clip("b32", str(source), clip, store, tmp_path / "onnx")
    checks = result.checks
    assert checks["passed"] and checks["tokenizer_ids_equal"] and checks["preprocess_equal"]
    for key in (
        "image_cosine_vs_torch",
        "text_cosine_vs_torch_full_context",
        "text_one_by_one_cosine_vs_torch",
    ):
        assert checks[key]["min"] >= 0.9999, (key, checks[key])
    assert read_manifest(result.folder).transform.output_size == (224, 224)


def test_quantising_ignores_stale_shape_annotations(tmp_path: Path) -> None:
    """An exporter's wrong shape annotation (torch 2.11 wrote one into ViT-L/14's image graph: 768 for a
    dimension of 1024) must not stop the int8 quantisation, and the int8 graph computes what fp32 does."""
    import onnx
    import onnxruntime
    from onnx import TensorProto, helper, numpy_helper

    from shared.models.onnx.export import quantize_graph

    rng = np.random.default_rng(0)
    weights = numpy_helper.from_array(rng.standard_normal((8, 16)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"]), helper.make_node("Relu", ["y"], ["z"])],
        "stale",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 16])],
        [weights],
    )
    # an annotation of a weight that disagrees with the weight (8 x 16): shape inference refuses the graph
    graph.value_info.append(helper.make_tensor_value_info("w", TensorProto.FLOAT, [12, 16]))
    src, dst = tmp_path / "fp32" / "g.onnx", tmp_path / "int8" / "g.onnx"
    src.parent.mkdir()
    dst.parent.mkdir()
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(src))

    quantize_graph(src, dst)

    assert sorted(p.name for p in src.parent.iterdir()) == ["g.onnx"]  # the stripped copy is gone
    assert any(
        n.op_type in ("MatMulInteger", "DynamicQuantizeLinear") for n in onnx.load(str(dst)).graph.node
    )
    x = rng.standard_normal((1, 8)).astype(np.float32)
    fp32, int8 = (
        onnxruntime.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
        for p in (src, dst)
    )
    assert np.allclose(fp32, int8, atol=0.1 * float(np.abs(fp32).max()))
