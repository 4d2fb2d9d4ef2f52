"""Every environment variable shared/settings.py reads, found by walking the Settings groups."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from pydantic import AliasChoices, SecretStr

from shared.settings import Settings

REPO = Path(__file__).resolve().parents[2]

COMPOSE_ONLY = frozenset(
    {
        "MINDSIGHT_IMAGE",
        "MINDSIGHT_TAG",
        "MINDSIGHT_BIND_ADDRESS",
        "REDIS_HOST_PORT",
        "EMBED_API_HOST_PORT",
        "GALLERY_HOST_PORT",
        "RQ_DASHBOARD_HOST_PORT",
        "GALLERY_DATA_DIR",
        "MINDSIGHT_MODELS_SOURCE",
        "MINDSIGHT_GPU_COUNT",
        "MINDSIGHT_PHOTO_WORKERS",
        "MINDSIGHT_PHOTO_THREADS",
        "MINDSIGHT_GPU_BATCH_SIZE",
        "COMPOSE_PROFILES",
    }
)
"""Variables .env.example may list although mindsight never reads them: docker compose's own."""


@dataclass(frozen=True)
class EnvVar:
    """One environment name and the settings field it feeds."""

    name: str
    group: str
    field: str
    secret: bool


def settings_env_vars() -> dict[str, EnvVar]:
    """Env name -> EnvVar, for every validation_alias (each AliasChoices choice counts)."""
    found: dict[str, EnvVar] = {}
    for group_name, group_field in Settings.model_fields.items():
        group_cls = group_field.annotation
        assert group_cls is not None and hasattr(group_cls, "model_fields"), group_name
        for field_name, info in group_cls.model_fields.items():
            alias = info.validation_alias
            names = (
                [c for c in alias.choices if isinstance(c, str)]
                if isinstance(alias, AliasChoices)
                else [alias]
            )
            assert all(isinstance(n, str) for n in names), f"{group_name}.{field_name} has no env name"
            secret = info.annotation is SecretStr
            for name in names:
                found[str(name)] = EnvVar(str(name), group_name, field_name, secret)
    return found


ASSIGNMENT = re.compile(r"^(#\s?)?([A-Z][A-Z0-9_]*)=(.*)$")


@dataclass(frozen=True)
class ExampleLine:
    """A `NAME=value` (active) or `# NAME=value` (optional, unset) line of .env.example."""

    name: str
    value: str
    active: bool
    lineno: int
    comment_above: str


def example_lines(path: Path = REPO / ".env.example") -> list[ExampleLine]:
    """Every assignment in .env.example with the prose comment line right above it ('' when none)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    out: list[ExampleLine] = []
    for i, line in enumerate(lines):
        m = ASSIGNMENT.match(line)
        if not m:
            continue
        above = lines[i - 1] if i else ""
        prose = above if above.startswith("#") and not ASSIGNMENT.match(above) else ""
        out.append(ExampleLine(m.group(2), m.group(3), m.group(1) is None, i + 1, prose))
    return out
