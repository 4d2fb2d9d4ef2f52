"""`mindsight search "a cat on the beach"`: text-to-photo (or photo-to-photo) search against the gallery."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from mindsight.cli.common import config_errors_exit, settings_from

if TYPE_CHECKING:
    from services.text_search import SearchHit


@click.command()
@click.argument("query", required=False)
@click.option("--limit", "-n", default=10, show_default=True, type=click.IntRange(1, 1000), help="Results.")
@click.option("--model", "label", default=None, help="CLIP model label [default: PROCESSING_DEFAULT_MODEL].")
@click.option(
    "--image", type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Search with this photo instead of a text (the image tower of the model).",
)  # fmt: skip
@click.option(
    "--modality", type=click.Choice(["image", "caption"]), default="image", show_default=True,
    help="Compare with the photos' image embeddings or with their captions' text embeddings.",
)  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
@config_errors_exit
def search(
    ctx: click.Context,
    query: str | None,
    limit: int,
    label: str | None,
    image: Path | None,
    modality: str,
    as_json: bool,
) -> None:
    """Find the photos nearest to QUERY (or to --image PATH) in the gallery; needs ACCESS_TOKEN."""
    if (image is None) == (query is None or not query.strip()):
        raise click.UsageError("give a query text or --image PATH (exactly one)")
    if query is not None and not _is_unicode(query):
        raise click.UsageError(
            "the query is not valid Unicode text: the terminal sent bytes its locale cannot decode "
            "(set a UTF-8 locale, e.g. LANG=C.UTF-8)"
        )
    from services.text_search import search as run_search  # lazy: loads torch only when searching
    from shared.errors import ConfigError, GalleryAuthError, MindsightError

    settings = settings_from(ctx)
    try:
        model, hits = run_search(settings, query, image=image, label=label, limit=limit, modality=modality)
    except ConfigError:
        raise  # config_errors_exit: one line, exit status 2
    except GalleryAuthError as exc:
        raise click.ClickException(f"{exc}; is ACCESS_TOKEN still valid?") from exc
    except MindsightError as exc:  # gallery down or refusing, unreadable photo, unknown model
        raise click.ClickException(f"{type(exc).__name__}: {exc}") from exc
    if as_json:
        body = {"model": model, "modality": modality, "items": [h.as_dict() for h in hits]}
        click.echo(json.dumps(body, indent=2, ensure_ascii=False))  # Chinese file names stay readable
        return
    _print_table(model, query if image is None else f"photo {image}", hits)


def _print_table(model: str, what: str | None, hits: list[SearchHit]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not hits:
        console.print(f"no photo has a {model!r} image embedding near {what!r} yet")
        return
    table = Table(title=f"{what} — model {model}", title_justify="left")
    table.add_column("rank", justify="right")
    table.add_column("photo id", justify="right")
    table.add_column("url", overflow="fold")
    table.add_column("distance", justify="right")
    for hit in hits:
        table.add_row(str(hit.rank), str(hit.photo_id), hit.url, f"{hit.distance:.4f}")
    console.print(table)


def _is_unicode(text: str) -> bool:
    """False for argv the locale could not decode (Python keeps such bytes as lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
