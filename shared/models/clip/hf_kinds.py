"""The transformers CLIP architectures mindsight serves, by config.json `model_type`; torch-free.

One table decides which transformers models count as CLIP models (`store.source.local_family` reads it to
accept a folder) and how each one's text tower is run (`transformers_backend` picks the classes with a
`match` over `HfClipKind.model_type`). Adding a family is one row here plus one `case` there.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from shared.errors import ConfigError


class TextTower(enum.StrEnum):
    """How a text tower reads its ids, which decides how a batch may be shortened and pooled."""

    CAUSAL = "causal"
    """OpenAI CLIP: causal mask, pooled at the end-of-text token; positions after it never matter."""
    BIDIRECTIONAL = "bidirectional"
    """BERT-style (Chinese-CLIP): every token sees every other, pooled at [CLS]; padding must be masked."""


@dataclass(frozen=True)
class HfClipKind:
    """One transformers CLIP architecture."""

    model_type: str
    text_tower: TextTower
    languages: str
    """What its text tower was trained on (shown in errors and docs/models.md)."""


HF_CLIP_KINDS: dict[str, HfClipKind] = {
    kind.model_type: kind
    for kind in (
        HfClipKind("clip", TextTower.CAUSAL, "English"),
        HfClipKind("chinese_clip", TextTower.BIDIRECTIONAL, "Chinese (and some English)"),
    )
}
"""Every transformers `model_type` the CLIP backends load (CLIPModel, ChineseCLIPModel)."""


def hf_clip_kind(model_type: object, where: str) -> HfClipKind:
    """The table row of `model_type`; ConfigError naming `where` and the supported types otherwise."""
    kind = HF_CLIP_KINDS.get(str(model_type))
    if kind is None:
        known = ", ".join(sorted(HF_CLIP_KINDS))
        raise ConfigError(
            f"{where} holds a {model_type!r} transformers model, not a CLIP model (model_type {known})"
        )
    return kind
