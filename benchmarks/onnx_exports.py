"""The ONNX exports approaches 2 and 3 run, made with the product's own `mindsight models export`, and
BLIP's int8 file the whole-photo workers load, made with `mindsight models download --caption`.

Exports are cached next to the model (MINDSIGHT_MODELS_DIR/onnx/<label>[-int8]), where the workers look
for them; the export's own checks (torch vs ONNX cosine, int8 deviation) are kept for the report.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.models import BenchModel
from benchmarks.processes import ProcessFailed, ProcessGroup

EXPORT_TIMEOUT_S = 900


@dataclass
class OnnxExports:
    """Where the exported graphs are (None when there is no export) and why not."""

    image_fp32: Path | None = None
    text_fp32: Path | None = None
    int8: bool = False
    checks: dict[str, Any] = field(default_factory=dict)
    problem: str = ""


def _folder(model: BenchModel, precision: str) -> Path:
    from shared.models.onnx.manifest import default_export_root, export_dir

    return export_dir(default_export_root(model.models_dir), model.label, precision)  # type: ignore[arg-type]


def _export_both(model: BenchModel, workdir: Path, log: Callable[[str], None]) -> None:
    """`mindsight models export --label L --int8` (fp32 and int8, checked) unless both are there."""
    from shared.models.onnx.manifest import is_onnx_export

    if all(is_onnx_export(_folder(model, p)) for p in ("fp32", "int8")):
        return
    log(f"exporting {model.label} to ONNX fp32 + int8 with `mindsight models export` (once, cached)")
    group = ProcessGroup(workdir, model.env())
    proc = group.mindsight("export", "models", "export", "--label", model.label, "--int8")
    try:
        code = proc.popen.wait(timeout=EXPORT_TIMEOUT_S)
    finally:
        group.stop()
    if code != 0 or not all(is_onnx_export(_folder(model, p)) for p in ("fp32", "int8")):
        raise ProcessFailed(f"mindsight models export failed with {code}:\n{proc.tail()}")


def ensure_exports(model: BenchModel, workdir: Path, log: Callable[[str], None]) -> OnnxExports:
    """fp32 and int8 exports of `model`, made if missing; an OnnxExports with `problem` set if impossible."""
    try:
        from shared.models.onnx.manifest import read_manifest
    except ImportError:
        return OnnxExports(problem="this checkout has no ONNX backend")
    from shared.models.onnx.manifest import is_onnx_export

    cli = Path(__file__).resolve().parent.parent / "mindsight/cli/models_cmd.py"
    if not cli.is_file() and not all(is_onnx_export(_folder(model, p)) for p in ("fp32", "int8")):
        return OnnxExports(problem="`mindsight models export` is not available in this checkout")
    exports = OnnxExports()
    try:
        _export_both(model, workdir, log)
    except ProcessFailed as exc:
        exports.problem = str(exc)[-2000:]
        log(f"ONNX export failed: {exports.problem}")
        return exports
    fp32 = _folder(model, "fp32")
    manifest = read_manifest(fp32)
    exports.image_fp32, exports.text_fp32 = fp32 / manifest.image_file, fp32 / manifest.text_file
    exports.int8 = True
    exports.checks = {"fp32": manifest.checks, "int8": read_manifest(_folder(model, "int8")).checks}
    return exports


def ensure_caption_int8(model: BenchModel, blip_dir: Path, workdir: Path, log: Callable[[str], None]) -> str:
    """`mindsight models download --caption` for `blip_dir`, as a CPU deployment runs it: it makes (once,
    then finds it present) the checked int8 file the caption workers load instead of quantising fp32 at
    start. Returns the command's last line (made, present, or why not); a failure is logged, not raised:
    the workers then quantise at start, as a deployment without the file does."""
    env = {
        **model.env(), "CAPTION_ENABLED": "1", "CAPTION_MODEL_NAME": str(blip_dir), "MINDSIGHT_DEVICE": "cpu",
    }  # fmt: skip
    log("caption model: its int8 file, as `mindsight models download --caption` makes it (once, cached)")
    group = ProcessGroup(workdir, env)
    proc = group.mindsight("caption-int8", "models", "download", "--caption")
    try:
        code = proc.popen.wait(timeout=EXPORT_TIMEOUT_S)
    finally:
        group.stop()
    lines = [line for line in proc.tail().splitlines() if line.strip()]
    if code != 0:
        log(f"models download --caption failed ({code}); workers will quantise at start:\n{proc.tail()}")
    return lines[-1] if lines else f"exit {code}"
