"""`mindsight models`: download the configured models, export CLIP to ONNX (fp32/int8), list what is where."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import click

from mindsight.cli.common import config_errors_exit, settings_from


@click.group()
def models() -> None:
    """Download, export and list the models this configuration uses."""


@models.command("export")
@click.option("--label", "labels", multiple=True, help="CLIP_MODELS label to export (repeatable).")
@click.option("--all", "all_labels", is_flag=True, help="Export every configured CLIP model.")
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="Parent folder of the exports  [default: MINDSIGHT_MODELS_DIR/onnx]",
)  # fmt: skip
@click.option("--int8", is_flag=True, help="Also write a dynamic-int8 copy (<label>-int8) and its deviation.")
@click.option("--opset", default=18, show_default=True, type=click.IntRange(17, 23), help="ONNX opset.")
@click.pass_context
@config_errors_exit
def export(
    ctx: click.Context, labels: tuple[str, ...], all_labels: bool, out: Path | None, int8: bool, opset: int
) -> None:
    """Export the image and text towers of CLIP models to ONNX, checked against torch (needs torch)."""
    if bool(labels) == all_labels:
        raise click.UsageError("give --label LABEL (repeatable) or --all")
    settings = settings_from(ctx)
    specs = {s.label: s.source for s in settings.clip.specs()}
    unknown = [label for label in labels if label not in specs]
    if unknown:
        raise click.UsageError(f"not in CLIP_MODELS: {', '.join(unknown)} (configured: {', '.join(specs)})")
    from shared.models.onnx.export import EXPORT_DEPENDENCIES

    missing = [m for m in EXPORT_DEPENDENCIES if importlib.util.find_spec(m) is None]
    if missing:  # the slim image: it runs exports but cannot make them
        raise click.ClickException(
            f"export needs the torch extra (missing {', '.join(missing)}): install mindsight-ml[torch], or "
            "run it in the full image and share MINDSIGHT_MODELS_DIR"
        )
    from shared.models.onnx.export import ExportError, export_clip
    from shared.models.onnx.manifest import default_export_root

    root = out or default_export_root(settings.store.models_dir)
    failed = []
    for label in labels or tuple(specs):
        try:
            results = export_clip(
                label, specs[label], settings.clip, settings.store, root, int8=int8, opset=opset,
                progress=lambda line: click.echo(f"  {line}", err=True),
            )  # fmt: skip
        except ExportError as exc:
            click.echo(f"export failed: {exc}", err=True)
            failed.append(label)
            continue
        for result in results:
            _print_result(result.folder, result.precision, result.checks, result.seconds)
    if failed:
        raise SystemExit(1)


@models.command("download")
@click.option("--clip", is_flag=True, help="The CLIP_MODELS repos/weights.")
@click.option("--caption", is_flag=True, help="CAPTION_MODEL_NAME (BLIP).")
@click.option("--face", is_flag=True, help="The insightface pack (FACE_MODEL_DIR/FACE_MODEL_NAME).")
@click.option("--all", "all_kinds", is_flag=True, help="All of the above (the default when none is given).")
@click.pass_context
@config_errors_exit
def download(ctx: click.Context, clip: bool, caption: bool, face: bool, all_kinds: bool) -> None:
    """Fetch the configured models to where the workers load them from; present ones are skipped.

    On a CPU deployment it also makes each CLIP model's int8 ONNX export and the caption model's int8 file,
    each checked against fp32, which the workers then use (MINDSIGHT_CLIP_PRECISION and
    MINDSIGHT_CAPTION_PRECISION=auto); a failed check keeps fp32 and is reported loudly.
    """
    from shared.models.store.download import DownloadError, fetch, plan

    settings = settings_from(ctx)
    chosen = {k for k, on in (("clip", clip), ("caption", caption), ("face", face)) if on}
    wanted_kinds: Any = chosen if chosen and not all_kinds else {"clip", "caption", "face"}
    failures = 0
    for wanted in plan(settings, wanted_kinds):
        try:
            outcome = fetch(
                wanted, offline=settings.store.offline, report=lambda line: click.echo(line, err=True),
                on_bytes=_ByteProgress(),
            )  # fmt: skip
        except DownloadError as exc:
            click.echo(f"FAILED   {wanted.kind:7s} {wanted.name}: {exc}", err=True)
            failures += 1
            continue
        click.echo(f"{outcome.status:8s} {wanted.kind:7s} {wanted.name}: {outcome.detail}")
    if "clip" in wanted_kinds and not failures:
        _cpu_int8(settings)
    if "caption" in wanted_kinds and not failures:
        _caption_int8(settings)
    if failures:
        raise SystemExit(1)


def _cpu_int8(settings: Any) -> None:
    """The int8 CLIP exports of a CPU deployment; a model left on fp32 gets a banner, not a failed exit,
    so the workers still start (on fp32)."""
    from shared.models.onnx.cpu_int8 import ensure_cpu_int8, int8_not_wanted

    reason = int8_not_wanted(settings)
    if reason is not None:
        click.echo(f"int8 CLIP exports not made: {reason}", err=True)
        return
    for outcome in ensure_cpu_int8(settings, progress=lambda line: click.echo(f"  {line}", err=True)):
        _print_int8(outcome, f"CLIP model {outcome.label} has NO int8 export and runs fp32 on this CPU")


def _caption_int8(settings: Any) -> None:
    """The caption model's int8 file on a CPU deployment; like CLIP's, a failure is a banner, not an exit."""
    from shared.models.caption.blip_int8_install import caption_int8_not_wanted, ensure_caption_int8

    reason = caption_int8_not_wanted(settings)
    if reason is not None:
        click.echo(f"int8 caption model not made: {reason}", err=True)
        return
    outcome = ensure_caption_int8(settings, progress=lambda line: click.echo(f"  {line}", err=True))
    what = "caption model has NO int8 file: each caption worker quantises it at start"
    if outcome.status == "fp32-kept":
        what = "caption model FAILED its int8 check and runs fp32 on this CPU"
    _print_int8(outcome, what)


def _print_int8(outcome: Any, what: str) -> None:
    """One line per int8 outcome; a banner on stderr when the CPU runs other than the default intends."""
    click.echo(f"{outcome.status:8s} int8    {outcome.label}: {outcome.detail}")
    if outcome.loud:
        bar = "!" * 100
        click.echo(f"{bar}\nWARNING: {what} (slower): {outcome.detail}\n{bar}", err=True)


@models.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@click.pass_context
@config_errors_exit
def ls(ctx: click.Context, as_json: bool) -> None:
    """What is configured, what is on disk and where, and the ONNX exports with their checks."""
    from shared.models.store.inventory import inventory

    data = inventory(settings_from(ctx))
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    _print_inventory(data)


class _ByteProgress:
    """Prints a download's progress every 10%, so logs stay short but a stalled download is visible."""

    def __init__(self) -> None:
        self.shown = -1

    def __call__(self, done: int, total: int | None) -> None:
        if total:
            step = done * 10 // total
            if step != self.shown:
                self.shown = step
                click.echo(f"  {done / 1e6:7.1f} / {total / 1e6:.1f} MB", err=True)


def _print_result(folder: Path, precision: str, checks: dict[str, Any], seconds: float) -> None:
    click.echo(f"{precision} export ready: {folder} ({seconds:.0f}s)")
    if precision == "fp32":
        rows = [
            ("image vs torch", checks["image_cosine_vs_torch"]),
            ("text vs torch (77 tokens)", checks["text_cosine_vs_torch_full_context"]),
            ("text one by one", checks["text_one_by_one_cosine_vs_torch"]),
            (f"text short batch ({checks['text_short_batch_positions_run']} positions)",
             checks["text_short_batch_cosine_vs_torch_full_context"]),
        ]  # fmt: skip
    else:
        rows = [
            ("image vs fp32", checks["image_cosine_vs_fp32"]),
            ("text vs fp32", checks["text_cosine_vs_fp32"]),
        ]
    for name, stats in rows:
        click.echo(f"  cosine {name:38s} min {stats['min']:.6f}  mean {stats['mean']:.6f}")
    click.echo(
        f"  tokenizer ids equal: {checks['tokenizer_ids_equal']}, preprocessing equal: "
        f"{checks['preprocess_equal']}, photos: {', '.join(checks['photos'])}"
    )


def _print_inventory(data: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    title = f"Configured models (MINDSIGHT_MODELS_DIR={data['models_dir']})"
    table = Table(title=title, title_justify="left")
    for column in ("kind", "name", "source", "on disk", "runtime", "ONNX fp32", "ONNX int8"):
        table.add_column(column, overflow="fold")
    for row in data["models"]:
        on_disk = row["on_disk"] + (f" ({row['error']})" if "error" in row else "")
        cells = (row.get("runtime", ""), row.get("onnx_fp32", ""), row.get("onnx_int8", ""))
        table.add_row(row["kind"], row["name"], row["source"], on_disk, *cells)
    console.print(table)
    if not data["exports"]:
        console.print("no ONNX exports yet (`mindsight models export --all [--int8]`)")
        return
    exports = Table(title="ONNX exports", title_justify="left")
    for column in ("folder", "label", "precision", "source", "dim", "opset", "checks", "MB"):
        exports.add_column(column, overflow="fold")
    for row in data["exports"]:
        if "error" in row:
            exports.add_row(row["folder"], "", "", "", "", "", row["error"], "")
            continue
        exports.add_row(
            row["folder"], row["label"], row["precision"], row["source"], str(row["dim"]),
            str(row["opset"]), row["checks"], str(row["size_mb"]),
        )  # fmt: skip
    console.print(exports)
