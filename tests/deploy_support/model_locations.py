"""Where each model of a configuration lives on disk, answered by the production download plan.

Stop-gap until shared/models offers one `model_locations(settings)` (issue 10/9 item 1): this composes
the same production functions (`model_download.plan`, the ONNX export root, HF_HOME) so deploy tests
can check the compose and k8s layouts against them. Replace the body with that function when it lands.
"""

from __future__ import annotations

from pathlib import Path

from shared.models.model_download import plan
from shared.models.onnx_manifest import default_export_root
from shared.settings import Settings


def model_locations(settings: Settings, env: dict[str, str]) -> dict[str, Path]:
    """Model kind/name -> the path it is downloaded to and loaded from (hub caches included)."""
    out: dict[str, Path] = {}
    for wanted in plan(settings, {"clip", "caption", "face"}):
        if wanted.target is not None:
            out[f"{wanted.kind}:{wanted.name}"] = wanted.target
        elif wanted.how == "open_clip":  # `Name/tag` weights go to open_clip's cache under HF_HOME
            out[f"{wanted.kind}:{wanted.name}"] = Path(env["HF_HOME"])
    out["onnx-exports"] = default_export_root(settings.store.models_dir)
    out["hf-cache"] = Path(env["HF_HOME"])
    return out
