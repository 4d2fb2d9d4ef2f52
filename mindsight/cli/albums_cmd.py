"""`mindsight albums`: group the faces in your photos into people and keep one album per person.

Each run scans only photos it has not seen (state in MINDSIGHT_PEOPLE_STATE_DIR): new faces join the
people found before, the rest may form new people; albums are created or grown to match.
"""

from __future__ import annotations

import click

from mindsight.cli.common import config_errors_exit, settings_from
from services.people_albums import run_people_albums
from shared.device import onnx_providers
from shared.errors import GalleryAuthError, GalleryRejected, GalleryUnavailable
from shared.gallery_client import GalleryClient
from shared.models.face.registry import distance_threshold, load_face_analyzer


@click.command()
@click.option("--dry-run", is_flag=True, help="Print what would change; write no album and no state.")
@click.option(
    "--max-photos", type=int, default=None, help="Newest photos to scan [default: MAX_PHOTOS; 0 = all]."
)
@click.option(
    "--threshold",
    type=float,
    default=None,
    help="Cosine distance under which faces are one person [default: FACE_DISTANCE_THRESHOLD, else "
    "0.42 for insightface, 0.09 for retinaface-dlib].",
)
@click.option(
    "--min-faces", type=int, default=None, help="Smallest person to get an album [MIN_FACES_PER_PERSON]."
)
@click.pass_context
@config_errors_exit
def albums(
    ctx: click.Context, dry_run: bool, max_photos: int | None, threshold: float | None, min_faces: int | None
) -> None:
    """Find faces in new photos (read from PROJECT_ROOT), add them to people, create or grow albums."""
    settings = settings_from(ctx)
    face = settings.face
    threshold = distance_threshold(face) if threshold is None else threshold
    if threshold <= 0:
        raise click.BadParameter("must be positive", param_hint="--threshold")
    settings.gallery.require_access_token()
    analyzer = load_face_analyzer(face, onnx_providers(settings.worker.device), settings.worker.threads)
    client = GalleryClient(settings.gallery, internal=False)
    try:
        report = run_people_albums(
            client,
            analyzer,
            face,
            settings.paths,
            threshold=threshold,
            min_faces=face.min_faces_per_person if min_faces is None else min_faces,
            max_photos=face.max_photos if max_photos is None else max_photos,
            dry_run=dry_run,
            progress=click.echo,
        )
    except GalleryAuthError as exc:
        raise click.ClickException(f"the gallery refused ACCESS_TOKEN: {exc}") from exc
    except (GalleryUnavailable, GalleryRejected) as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        client.close()
    verb = "would create" if dry_run else "created"
    made = len(report.groups) if dry_run else len(report.created)
    click.echo(
        f"{report.photos} photos ({report.photos_new} new, {report.photos_skipped} unreadable), "
        f"{report.faces} faces ({report.faces_used} used); {report.people_known} people known, "
        f"{len(report.grown)} gain faces, {len(report.groups)} new people; {verb} {made} albums, "
        f"{len(report.already_present)} already present, {report.photos_added} photos added, "
        f"{report.photos_pending} pending; {report.seconds:.1f}s"
    )
