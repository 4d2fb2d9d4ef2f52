"""The task behind the routes: check texts, pick the model a request names, embed. No HTTP here."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np

from shared.errors import BadPayload, ConfigError, UnknownModel
from shared.models.clip.registry import ClipModel

WARM_UP_TEXT = "a photo of a cat on the beach"
"""Embedded once per model at start-up: the first forward pass pays torch's one-off set-up costs."""


class InputTooLarge(BadPayload):
    """A text longer than EMBED_API_MAX_TEXT_CHARS, or more texts than EMBED_API_MAX_BATCH."""


class EmbedObserver(Protocol):
    """Told about every successful embedding call (the metrics implement it)."""

    def embedded(self, label: str, count: int, seconds: float) -> None: ...


class TextEmbeddingService:
    """Texts -> CLIP text vectors of one configured model, chosen by label or by source."""

    def __init__(
        self,
        models: Mapping[str, ClipModel],
        default_label: str,
        *,
        max_text_chars: int,
        max_batch: int,
        observer: EmbedObserver | None = None,
    ) -> None:
        if not models:
            raise ConfigError("the embedding service needs at least one CLIP model (CLIP_MODELS)")
        if default_label not in models:
            offered = ", ".join(models)
            raise ConfigError(f"default model {default_label!r} is not among the loaded ones: {offered}")
        if max_text_chars < 1 or max_batch < 1:
            raise ConfigError("EMBED_API_MAX_TEXT_CHARS and EMBED_API_MAX_BATCH must be at least 1")
        self.models = dict(models)
        self.default_label = default_label
        self.max_text_chars = max_text_chars
        self.max_batch = max_batch
        self._observer = observer
        # A request may name a model by the label the gallery stores or by the source it was loaded from;
        # labels win when a string is both.
        self._by_name: dict[str, ClipModel] = {m.source: m for m in models.values()}
        self._by_name.update(models)

    def resolve(self, requested: str | None) -> ClipModel:
        """The model a request means: the default when none is named; UnknownModel lists what is on offer."""
        if requested is None or not requested.strip():
            return self.models[self.default_label]
        model = self._by_name.get(requested.strip())
        if model is None:
            raise UnknownModel(
                f"unknown model {requested!r}; this service offers {', '.join(sorted(self.models))} "
                f"(default {self.default_label}), by label or by source"
            )
        return model

    def embed(self, texts: Sequence[str], requested: str | None) -> tuple[ClipModel, list[np.ndarray]]:
        """Check every text, then embed them in one batch; returns the model used and one vector per text."""
        if not texts:
            raise BadPayload("texts is empty: send at least one text")
        if len(texts) > self.max_batch:
            raise InputTooLarge(
                f"{len(texts)} texts in one request; at most {self.max_batch} (EMBED_API_MAX_BATCH)"
            )
        for i, text in enumerate(texts):
            self._check(text, i if len(texts) > 1 else None)
        model = self.resolve(requested)
        start = time.perf_counter()
        vectors = model.text.predict(list(texts))
        if self._observer is not None:
            self._observer.embedded(model.label, len(texts), time.perf_counter() - start)
        return model, vectors

    def warm_up(self) -> None:
        """Load every text tower and run one query through it, so the first real request is not slow."""
        for model in self.models.values():
            model.text.load()
            model.text.predict([WARM_UP_TEXT])

    @property
    def ready(self) -> bool:
        """True once every model's text tower is loaded."""
        return all(m.text.loaded for m in self.models.values())

    def _check(self, text: str, index: int | None) -> None:
        where = "text" if index is None else f"texts[{index}]"
        if not text.strip():
            raise BadPayload(f"{where} is empty or only whitespace")
        if len(text) > self.max_text_chars:
            raise InputTooLarge(
                f"{where} has {len(text)} characters; at most {self.max_text_chars} "
                "(EMBED_API_MAX_TEXT_CHARS)"
            )
