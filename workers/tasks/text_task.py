"""Text queries embedded with the CLIP text tower of the label the job names (or the default)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shared.errors import UnknownModel
from shared.models.clip.registry import ClipModel
from shared.payloads import TextJob
from workers.tasks.base import TextTask


class ClipTextTask(TextTask):
    """Resolves a job's `model` (label, or the source of a configured model) and embeds."""

    def __init__(self, models: Mapping[str, ClipModel], default_label: str) -> None:
        self.models = dict(models)
        self.default_label = default_label
        self._by_source = {m.source: label for label, m in self.models.items()}

    def resolve(self, job: TextJob) -> str:
        wanted = (job.model or "").strip() or self.default_label
        if wanted in self.models:
            return wanted
        if wanted in self._by_source:
            return self._by_source[wanted]
        raise UnknownModel(f"unknown model {wanted!r}; labels on offer: {', '.join(self.models)}")

    def embed(self, label: str, texts: list[str]) -> list[list[float]]:
        return [v.tolist() for v in self.models[label].text.predict(texts)]

    def describe(self) -> dict[str, Any]:
        return {
            label: {"source": m.source, "device": m.runtime_info.device, "dim": m.dim}
            for label, m in self.models.items()
        }
