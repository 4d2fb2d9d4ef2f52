"""The benchmark harness: approach names, ratio arithmetic, and one end-to-end run on a tiny CLIP.

The end-to-end run proves the harness drives every process for real (Redis, router, RQ workers, the
baseline loop, gallery callbacks) and computes its ratios from what it measured; it asserts no timing.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.approaches import UnknownApproach, cores, parse_approach
from benchmarks.pipeline_bench import PipelineRun
from benchmarks.report import check_targets, markdown, summarise


def _run(
    approach: str,
    rate: float,
    size: str = "12mp",
    single: float = 100.0,
    round: str = "",
    precision: str = "int8",
) -> PipelineRun:
    return PipelineRun(
        round=round,
        approach=approach, title=approach, size=size, photos=10, seconds=10 / rate, photos_per_s=rate,
        mean_photo_latency_ms=500.0, split_ms={"decode": 1.0}, single_latency_ms=[single, single + 20],
        single_split_ms={"decode": 30.0, "inference": 50.0, "callback": 5.0, "other": single - 85},
        peak_rss_mb={"worker-clip-0": 400.0}, runtime={"runtime": "onnxruntime", "precision": precision},
    )  # fmt: skip


def test_parse_approach_forms() -> None:
    assert parse_approach("1").kind == "hf-torch"
    assert parse_approach("2").kind == "ort-fp32"
    ours = parse_approach("3")
    assert ours.is_ours and ours.workers == cores() and ours.env == {}
    int8 = parse_approach("3-int8-1p-2t")
    assert int8.workers == 1 and int8.env["MINDSIGHT_THREADS"] == "2"
    assert int8.env["MINDSIGHT_CLIP_RUNTIME"] == "onnx"
    bare = parse_approach("bare-int8-1p-2t")  # the same suffixes, the same meaning
    assert (bare.kind, bare.workers, bare.env) == ("bare", 1, int8.env) and not bare.is_ours
    assert bare.runs_our_code and parse_approach("bare").workers == cores()
    for bad in ("4", "3-fast", "3-0p", "3-p", "bare-fast", "bare3"):
        with pytest.raises(UnknownApproach):
            parse_approach(bad)


def test_summary_ratios_use_medians_and_pair_repeats() -> None:
    runs = [
        _run("1", 2.0, round="a"), _run("2", 4.0, round="a"), _run("3", 24.0, single=90.0, round="a"),
        _run("1", 3.0, round="b"), _run("2", 5.0, round="b"), _run("3", 27.0, single=200.0, round="b"),
        _run("2", 4.5, round="c"), _run("3", 25.0, single=100.0, round="c"), _run("1", 2.5, round="c"),
    ]  # fmt: skip
    rows = {r["approach"]: r for r in summarise(runs)}
    ours = rows["3"]
    assert ours["photos_per_s"] == 25.0 and ours["repeats"] == 3
    assert (ours["photos_per_s_min"], ours["photos_per_s_max"]) == (24.0, 27.0)
    assert ours["x_vs_1"] == round(25.0 / 2.5, 2)
    assert ours["x_vs_2"] == round(25.0 / 4.5, 2)
    assert ours["x_vs_1_range"] == [9.0, 12.0]  # per repeat: 24/2, 27/3, 25/2.5
    assert rows["1"]["x_vs_1"] == 1.0
    assert ours["single_latency_median_ms"] == 115.0  # median of all samples of all repeats

    targets = {t["target"]: t for t in check_targets(list(rows.values()), [])}
    assert targets["3: photos/s vs approach 1"]["met"] is True  # 10x, the target is 8x
    assert targets["3: photos/s vs approach 2"]["met"] is True  # 5.56x, the target is 5x
    assert targets["3: single-photo latency (median)"]["met"] is True
    assert targets["3: CLIP worker peak RSS (ONNX)"]["value"] == 400.0
    assert "1: photos/s vs approach 1" not in targets  # targets are about ours only

    slow = {t["target"]: t for t in check_targets(summarise([_run("1", 3.0), _run("3", 12.0)]), [])}
    assert slow["3: photos/s vs approach 1"]["met"] is False
    text = markdown("machine", "model", list(rows.values()), [], list(targets.values()))
    assert "| 12mp | 3 | 10 | **25** (24-27) | 10 (9-12) | 5.56 (5.4-6) |" in text


@pytest.mark.slow
def test_bench_runs_end_to_end_on_a_tiny_model(tiny_transformers_clip_dir: Path, tmp_path: Path) -> None:
    from benchmarks.run import main

    results = main([
        "--quick", "--model-dir", str(tiny_transformers_clip_dir),
        "--approaches", "1,2,3-int8-1p,bare-int8-1p", "--photos", "2", "--latency-samples", "1",
        "--no-embed", "--out", str(tmp_path),
    ])  # fmt: skip

    rows = {r["approach"]: r for r in results["summary"]}
    assert set(rows) == {"1", "2", "3-int8-1p", "bare-int8-1p"}
    for row in rows.values():
        assert row["size"] == "1080p" and row["photos"] == 2
        assert row["photos_per_s"] > 0
        assert row["single_latency_median_ms"] > 0
        assert all(v > 0 for k, v in row["peak_rss_mb"].items() if k != "router")
        assert {"decode", "inference"} <= set(row["split_ms"])
    ours, legacy, immich, bare = rows["3-int8-1p"], rows["1"], rows["2"], rows["bare-int8-1p"]
    assert all({"callback", "queue_wait"} <= set(r["split_ms"]) for r in (ours, legacy, immich))
    # bare ran the worker's code on the same runtime, so ours' overhead is measured against it
    assert (bare["runtime"]["runtime"], bare["runtime"]["precision"]) == ("onnxruntime", "int8")
    assert list(bare["peak_rss_mb"]) == ["bare-0"] and bare["split_ms"]["inference"] > 0
    assert ours["bare_match"] == "bare-int8-1p"
    assert ours["overhead_vs_bare"] == round(1 - ours["photos_per_s"] / bare["photos_per_s"], 3)
    assert ours["x_vs_1"] == round(ours["photos_per_s"] / legacy["photos_per_s"], 2)
    assert ours["x_vs_2"] == round(ours["photos_per_s"] / immich["photos_per_s"], 2)
    # the harness exported the tiny model with `mindsight models export --int8` and the worker runs it
    assert (ours["runtime"]["runtime"], ours["runtime"]["precision"]) == ("onnxruntime", "int8")
    assert (tmp_path / "models/onnx/bench-custom-int8/image.onnx").is_file()
    assert legacy["split_ms"]["decode"] > 0 and ours["split_ms"]["inference"] > 0

    written = list(tmp_path.glob("results-*.json"))
    assert len(written) == 1
    saved = json.loads(written[0].read_text())
    assert saved["machine"]["cores"] >= 1 and saved["summary"] == results["summary"]
    assert "| 1080p | 3-int8-1p | 2 |" in saved["markdown"]
    assert "| 1080p | 3-int8-1p | bare-int8-1p |" in saved["markdown"]


def test_overhead_is_against_the_bare_loop_that_ran_the_same_runtime() -> None:
    runs = [
        _run("3", 18.0, round="a"), _run("3-onnx", 9.0, round="a", precision="fp32"),
        _run("bare", 20.0, round="a"), _run("bare-onnx", 12.0, round="a", precision="fp32"),
        _run("3", 19.0, round="b"), _run("bare", 19.0, round="b"),
    ]  # fmt: skip
    rows = {r["approach"]: r for r in summarise(runs)}
    ours, fp32 = rows["3"], rows["3-onnx"]
    assert (ours["bare_match"], ours["overhead_vs_bare"]) == ("bare", round(1 - 18.5 / 19.5, 3))
    assert ours["overhead_vs_bare_range"] == [0.0, 0.1]  # round b: 19/19, round a: 18/20
    assert (fp32["bare_match"], fp32["overhead_vs_bare"]) == ("bare-onnx", 0.25)  # fp32 with fp32
    assert "overhead_vs_bare" not in rows["bare"]

    targets = {t["target"]: t for t in check_targets(list(rows.values()), [])}
    assert targets["3: pipeline overhead vs bare, % of bare photos/s"]["met"] is True  # 5.1%
    assert targets["3-onnx: pipeline overhead vs bare-onnx, % of bare photos/s"]["met"] is False
    text = markdown("machine", "model", list(rows.values()), [], [])
    assert "| 12mp | 3-onnx | bare-onnx | 9 | 12 | **25.0%** |" in text


def test_merge_drops_noisy_measurements_and_keeps_pairing(tmp_path: Path) -> None:
    from benchmarks.merge import merge

    def results(name: str, runs: list[PipelineRun]) -> Path:
        path = tmp_path / name
        data = {
            "machine": {"cpu": "cpu", "cores": 2, "cpu_flags": [], "ram_gib": 1.0, "os": "os", "python": "3",
                        "libraries": {"torch": "t", "onnxruntime": "o", "transformers": "x"}},
            "model": {"description": "tiny"},
            "pipeline": [r.to_json() for r in runs],
        }  # fmt: skip
        path.write_text(json.dumps(data))
        return path

    quiet_1, quiet_3 = _run("1", 2.0), _run("3", 16.0)
    noisy_1 = _run("1", 0.5)
    noisy_1.foreign_cpu_share = 0.4
    first = results("results-a.json", [quiet_1, quiet_3])  # no `round` stored: taken from the order
    second = results("results-b.json", [noisy_1, _run("3", 18.0)])

    text, summary = merge([first, second], max_noise=0.1)

    rows = {r["approach"]: r for r in summary["summary"]}
    assert rows["1"]["repeats"] == 1 and rows["3"]["repeats"] == 2
    assert rows["3"]["photos_per_s"] == 17.0 and rows["3"]["x_vs_1"] == 8.5
    assert rows["3"]["x_vs_1_range"] == [8.0, 8.0]  # only round a has both
    assert len(summary["dropped"]) == 1 and "40%" in summary["dropped"][0]
    assert text.startswith("Merged 2 run(s): 3 measurements kept, 1 left out")


@pytest.mark.slow
def test_lane_bench_runs_both_modes_on_a_tiny_model(tiny_transformers_clip_dir: Path, tmp_path: Path) -> None:
    from benchmarks.run import main

    results = main([
        "--lanes", "--quick", "--model-dir", str(tiny_transformers_clip_dir), "--bulk", "64",
        "--set", "MINDSIGHT_BULK_BATCH_SIZE=8", "--out", str(tmp_path),
    ])  # fmt: skip

    on, off = results["lanes"], results["no lanes"]
    assert results["bulk_batch"] == 8 and len(on["idle_latency_ms"]) == 12
    for mode in (on, off):
        assert mode["bulk_photos_per_s"] > 0 and len(mode["upload_latency_ms"]) == 12
    assert "| lanes |" in results["markdown"] and "| no lanes |" in results["markdown"]
    assert len(list(tmp_path.glob("results-lanes-*.json"))) == 1


@pytest.mark.slow
def test_whole_photo_bench_runs_legacy_and_ours_on_tiny_models(
    tiny_transformers_clip_dir: Path, tiny_blip_dir: Path, tmp_path: Path
) -> None:
    from benchmarks.run import main

    results = main([
        "--whole", "--quick", "--model-dir", str(tiny_transformers_clip_dir), "--caption-model-dir",
        str(tiny_blip_dir), "--approaches", "legacy,photo-1p", "--photos", "2", "--latency-samples", "1",
        "--out", str(tmp_path),
    ])  # fmt: skip

    runs = {r["approach"]: r for r in results["whole"]}
    assert set(runs) == {"legacy", "photo-1p"}
    for run in runs.values():
        assert run["photos"] == 2 and len(run["caption_words"]) == 2  # one caption callback per photo
        assert all(1 <= words <= 16 for words in run["caption_words"])  # the tiny BLIP may end early
        assert 0 < run["image_s"] <= run["everything_s"] and 0 < run["faces_s"] <= run["everything_s"]
        assert run["photos_per_s"] == pytest.approx(2 / run["everything_s"], rel=0.01)  # s rounded to 1 ms
        assert run["single_image_ms"][0] <= run["single_all_ms"][0]
        assert run["rss_total_mb"] == round(sum(run["peak_rss_mb"].values()), 1)
        assert all(mb > 0 for mb in run["peak_rss_mb"].values())
        assert run["stage_s"]["face"]["inference"] > 0 and run["stage_s"]["caption"]["inference"] > 0
    # the whole default stack of ours: router, the photo worker, the text worker and the embed API
    assert set(runs["photo-1p"]["peak_rss_mb"]) == {"router", "worker-photo-0", "worker-text", "embed-api"}
    assert set(runs["legacy"]["peak_rss_mb"]) == {"baseline-legacy"}
    # ours ran with default settings: the int8 CLIP export `mindsight models export --int8` made
    clip = next(iter(runs["photo-1p"]["runtime"]["clip"].values()))
    assert (clip["runtime"], clip["precision"]) == ("onnxruntime", "int8")
    rows = {r["approach"]: r for r in results["summary"]}
    assert rows["photo-1p"]["x_vs_legacy"] == round(
        rows["photo-1p"]["photos_per_s"] / rows["legacy"]["photos_per_s"], 2
    )
    saved = json.loads(next(tmp_path.glob("results-whole-*.json")).read_text())
    assert saved["summary"] == results["summary"] and "| photo-1p | 2 |" in saved["markdown"]


def test_gallery_clock_tells_callback_kinds_apart() -> None:
    from benchmarks.gallery_clock import classify

    assert classify("faces", b'{"faces": [{"embedding": [1.0]}, {"embedding": [2.0]}]}') == ("faces", 2)
    caption = b'{"modality": "caption", "caption": "a cat on the beach", "processing_status": "done"}'
    assert classify("ml_result", caption) == ("caption", 5)
    assert classify("ml_result", b'{"modality": "image", "processing_status": "done"}') == ("image", 0)
    assert classify("ml_result", b'{"modality": "image", "processing_status": "failed"}') == ("failure", 0)
    assert classify("ml_result", b"not json") == ("unknown", 0)


def test_whole_layouts() -> None:
    from benchmarks.whole_layouts import UnknownLayout, parse_layout

    assert parse_layout("legacy").kind == "legacy" and not parse_layout("immich").is_ours
    split = parse_layout("split")
    assert [args for _, args in split.workers] == [
        ("worker", "clip"),
        ("worker", "caption"),
        ("worker", "face"),
    ]
    photo = parse_layout("photo-2p-3t")
    assert len(photo.workers) == 2 and photo.env == {"MINDSIGHT_THREADS": "3"}
    assert photo.workers[0][1] == ("worker", "photo")
    assert parse_layout("photo-1p").env == {"MINDSIGHT_THREADS": "1"}
    for bad in ("photo", "photo-0p", "photo-2p-0t", "3", "splits"):
        with pytest.raises(UnknownLayout):
            parse_layout(bad)


def test_the_whole_bench_names_the_compose_default_from_the_compose_file(tmp_path: Path) -> None:
    from benchmarks.whole_layouts import compose_photo_layout, parse_layout
    from shared.device import auto_threads

    processes, threads = compose_photo_layout() or (0, 0)
    assert processes >= 1 and threads >= 1
    default = f"photo-{processes}p-{threads}t"
    assert parse_layout(default).title.endswith("(docker-compose.yml's default)")
    assert not parse_layout(f"photo-{processes + 1}p-{threads}t").title.endswith("default)")
    other = tmp_path / "compose.yml"
    other.write_text("replicas: ${MINDSIGHT_PHOTO_WORKERS:-3}\nTHREADS: ${MINDSIGHT_PHOTO_THREADS:-4}\n")
    assert compose_photo_layout(other) == (3, 4)
    assert compose_photo_layout(tmp_path / "missing.yml") is None
    other.write_text("replicas: ${MINDSIGHT_PHOTO_WORKERS:-2}\nTHREADS: ${MINDSIGHT_PHOTO_THREADS:-auto}\n")
    assert compose_photo_layout(other) == (2, auto_threads(2))  # this machine's share of its cores


def test_the_gpu_bench_runs_ours_as_the_gpu_override_does(tmp_path: Path) -> None:
    from benchmarks.whole_layouts import (
        UnknownLayout,
        compose_gpu_layout,
        compose_photo_layout,
        gpu_approaches,
        parse_layout,
    )
    from shared.device import auto_threads

    processes, threads, batch = compose_gpu_layout() or (0, 0, 0)
    assert processes >= 1 and batch > 1 and threads == (compose_photo_layout() or (0, 0))[1]
    more = f"photo-{processes + 1}p-{auto_threads(processes + 1)}t"  # compose's auto threads, shared
    assert gpu_approaches() == ("legacy", f"photo-{processes}p-{threads}t", more)
    default = parse_layout(f"photo-{processes}p-{threads}t", gpu=True)
    assert default.title.endswith("(deploy/docker-compose.gpu.yml's default)")
    assert default.router_env == {"MINDSIGHT_BATCH_SIZE": str(batch)}  # the router alone, as compose sets it
    assert default.env == {"MINDSIGHT_THREADS": str(threads)}
    assert parse_layout(f"photo-{processes}p-{threads}t").router_env == {}  # the CPU layout keeps its default
    assert "CUDA" in parse_layout("legacy", gpu=True).title
    with pytest.raises(UnknownLayout, match="onnxruntime-gpu"):
        parse_layout("immich", gpu=True)
    base, gpu = tmp_path / "compose.yml", tmp_path / "gpu.yml"
    base.write_text("${MINDSIGHT_PHOTO_WORKERS:-1} ${MINDSIGHT_PHOTO_THREADS:-3}\n")
    gpu.write_text("replicas: ${MINDSIGHT_PHOTO_WORKERS:-2}\nBATCH: ${MINDSIGHT_GPU_BATCH_SIZE:-32}\n")
    assert compose_gpu_layout(base, gpu) == (2, 3, 32)
    assert compose_gpu_layout(base, tmp_path / "missing.yml") is None


def test_the_gpu_bench_needs_whole_and_a_cuda_device(capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.machine import GpuMissing, describe_gpu
    from benchmarks.run import main, parse_args

    assert parse_args(["--whole", "--gpu"]).approaches[0] == "legacy"
    with pytest.raises(SystemExit):
        parse_args(["--gpu"])
    assert "add --whole" in capsys.readouterr().err
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        assert describe_gpu()
        return
    with pytest.raises(GpuMissing, match="sees no CUDA device"):
        describe_gpu()
    with pytest.raises(SystemExit, match="sees no CUDA device"):  # before any model is built
        main(["--whole", "--gpu", "--out", "/nonexistent/never-written"])


def test_the_stack_memory_goal_is_the_cpu_stacks() -> None:
    from benchmarks.whole_report import check_whole_targets

    row = {"approach": "photo-1p-2t", "x_vs_legacy": 3.0, "image_time_vs_legacy": 0.1, "rss_total_mb": 9000.0}
    on_cpu = {t["target"]: t["met"] for t in check_whole_targets([row])}
    assert on_cpu == {
        "photo-1p-2t: photos/s vs legacy": True,
        "photo-1p-2t: all image embeddings, time vs legacy": True,
        "photo-1p-2t: whole stack peak RSS (MB)": False,
    }
    on_gpu = [t["target"] for t in check_whole_targets([row], gpu=True)]
    assert not any("RSS" in t for t in on_gpu) and len(on_gpu) == 2


def test_immich_style_captions_embed_like_legacy(
    tiny_transformers_clip_dir: Path, tiny_blip_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Immich-style loads the CLIP text tower alone for captions; it must embed exactly as legacy's model."""
    from PIL import Image
    from transformers import CLIPModel

    from benchmarks.whole_baseline import TorchCaptioner
    from shared.models.onnx.checks import check_photos
    from shared.settings import load_settings

    monkeypatch.setenv("CAPTION_MAX_LENGTH", "17")
    settings = load_settings(env_file=None)
    photo: Image.Image = check_photos()[1][0]
    full = CLIPModel.from_pretrained(tiny_transformers_clip_dir).eval()
    legacy = TorchCaptioner(tiny_blip_dir, tiny_transformers_clip_dir, full, settings, "cpu")
    immich = TorchCaptioner(tiny_blip_dir, tiny_transformers_clip_dir, None, settings, "cpu")
    (caption, vector), (same, other) = legacy.caption(photo), immich.caption(photo)
    assert type(immich.clip).__name__ == "CLIPTextModelWithProjection"
    assert caption == same and 1 <= len(caption.split()) <= 16
    assert float(vector @ other) > 0.9999
