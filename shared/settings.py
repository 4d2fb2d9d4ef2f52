"""All configuration, read once from the environment (and `.env`) into one object with nested groups.

Env names follow the existing gallery backend (REDIS_URL, CLIP_MODELS, PROCESSING_*, ...); settings this
project adds are prefixed MINDSIGHT_ unless they belong to an existing family (CAPTION_*, FACE_*).
No other module reads os.environ: each component receives its own group through its constructor.
Every variable here is listed, with a comment, in `.env.example`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.errors import ConfigError

PLACEHOLDER_TOKENS = frozenset(
    {
        "",
        "changeme",
        "change-me",
        "change_me",
        "secret",
        "token",
        "your-token",
        "xxx",
        "placeholder",
        "与服务端一致的 token",
        "replace-me",
    }
)
"""Values of PROCESSING_INTERNAL_TOKEN that are refused at start-up: copied from an example, never set."""

Device = Literal["auto", "cpu", "cuda"]

FACE_PACKS_SUBDIR = "insightface"
"""Folder of the models volume that holds the face packs when FACE_MODEL_DIR is unset."""
DEFAULT_FACE_MODEL_URL = "https://github.com/deepinsight/insightface/releases/download/v0.7/{name}.zip"


class _Group(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)


class RedisSettings(_Group):
    """Where jobs come from and where dead letters go."""

    url: str = Field("redis://127.0.0.1:6379/0", validation_alias="REDIS_URL")
    photo_queue: str = Field("photo_tasks", validation_alias="REDIS_QUEUE_NAME")
    photo_bulk_queue: str = Field("photo_tasks_bulk", validation_alias="REDIS_BULK_QUEUE_NAME")
    """Photo jobs pushed here go on the bulk lane (shared.lanes): taken only when no fresh upload waits."""
    photo_dlq: str = Field("photo_tasks_dlq", validation_alias="REDIS_DLQ_NAME")
    text_queue: str = Field("text_tasks", validation_alias="TEXT_EMBED_QUEUE_NAME")
    text_dlq: str = Field("text_tasks_dlq", validation_alias="TEXT_EMBED_DLQ_NAME")
    max_payload_bytes: int = Field(64 * 1024, validation_alias="MINDSIGHT_MAX_PAYLOAD_BYTES")
    cli_timeout_s: float = Field(5.0, gt=0, validation_alias="MINDSIGHT_CLI_REDIS_TIMEOUT_S")
    """Connect and reply timeout of the CLI's Redis connections: a Redis host that drops packets fails the
    command with one line instead of hanging it (the CLI sends only short commands, no blocking pops)."""


class GallerySettings(_Group):
    """The gallery API: internal callbacks (token) and the user API used by the CLI tools (bearer)."""

    api_base_url: str = Field("http://127.0.0.1:5800", validation_alias="API_BASE_URL")
    internal_token: SecretStr = Field(SecretStr(""), validation_alias="PROCESSING_INTERNAL_TOKEN")
    access_token: SecretStr = Field(SecretStr(""), validation_alias="ACCESS_TOKEN")
    timeout_s: float = Field(10.0, validation_alias="MINDSIGHT_GALLERY_TIMEOUT_S")
    retries: int = Field(3, validation_alias="MINDSIGHT_GALLERY_RETRIES")

    def require_internal_token(self) -> str:
        """The token, or a ConfigError when it is empty or an example placeholder."""
        token = self.internal_token.get_secret_value().strip()
        if token.lower() in PLACEHOLDER_TOKENS or token.lower().startswith("change"):
            raise ConfigError(
                "PROCESSING_INTERNAL_TOKEN is empty or a placeholder; set it to the gallery backend's "
                "internal token (see .env.example)"
            )
        return token

    def require_access_token(self) -> str:
        """The user's bearer token for the CLI tools, or a ConfigError naming the variable."""
        token = self.access_token.get_secret_value().strip()
        if not token:
            raise ConfigError("ACCESS_TOKEN is not set: log in to the gallery and export ACCESS_TOKEN=<jwt>")
        return token


class PathSettings(_Group):
    """Roots that relative photo paths resolve against; nothing outside them is ever read."""

    project_root: Path | None = Field(None, validation_alias="PROJECT_ROOT")
    upload_base_dir: Path | None = Field(None, validation_alias="UPLOAD_BASE_DIR")

    def roots(self) -> list[Path]:
        """Configured roots, most specific first; the working directory when none is set."""
        roots = [p for p in (self.upload_base_dir, self.project_root) if p is not None]
        return roots or [Path.cwd()]


class ClipModelSpec(BaseModel):
    """One CLIP model: the label the gallery knows it by, and where its weights come from."""

    label: str
    source: str


class ClipSettings(_Group):
    """CLIP image/text models. CLIP_MODELS wins; otherwise PROCESSING_DEFAULT_MODEL=CLIP_MODEL_NAME."""

    models_raw: str = Field("", validation_alias="CLIP_MODELS")
    model_name: str = Field("openai/clip-vit-large-patch14", validation_alias="CLIP_MODEL_NAME")
    default_model: str = Field("clip-ViT-L-14", validation_alias="PROCESSING_DEFAULT_MODEL")
    embedding_dim: int = Field(768, validation_alias="PROCESSING_EMBEDDING_DIM")
    dims_raw: str = Field("", validation_alias="CLIP_MODEL_DIMS")
    runtime: Literal["auto", "torch", "onnx"] = Field("auto", validation_alias="MINDSIGHT_CLIP_RUNTIME")
    precision: Literal["auto", "fp32", "int8"] = Field("auto", validation_alias="MINDSIGHT_CLIP_PRECISION")
    """auto: the verified int8 ONNX export on CPU when `mindsight models download` made one, else fp32 (and
    always fp32 on GPU); int8 requires that export; fp32 opts out of int8."""
    max_text_tokens: int = Field(77, validation_alias="MINDSIGHT_MAX_TEXT_TOKENS")

    def specs(self) -> list[ClipModelSpec]:
        """Parsed `label=source,label2=source2`; a bare `source` gets PROCESSING_DEFAULT_MODEL as label."""
        raw = self.models_raw.strip()
        if not raw:
            return [ClipModelSpec(label=self.default_model, source=self.model_name)]
        specs: list[ClipModelSpec] = []
        for item in raw.split(","):
            item = item.strip()
            if not item:
                continue
            label, sep, source = item.partition("=")
            if not sep:
                label, source = self.default_model, item
            label, source = label.strip(), source.strip()
            if not label or not source:
                raise ConfigError(f"CLIP_MODELS entry {item!r} must look like label=repo_or_path")
            if any(s.label == label for s in specs):
                raise ConfigError(f"CLIP_MODELS names label {label!r} twice")
            specs.append(ClipModelSpec(label=label, source=source))
        if not specs:
            raise ConfigError("CLIP_MODELS is set but names no model")
        return specs

    def expected_dim(self, label: str) -> int:
        """Dimension a label must produce: its CLIP_MODEL_DIMS entry, else PROCESSING_EMBEDDING_DIM."""
        for item in self.dims_raw.split(","):
            name, sep, dim = item.partition("=")
            if sep and name.strip() == label:
                try:
                    return int(dim)
                except ValueError as exc:
                    raise ConfigError(f"CLIP_MODEL_DIMS entry {item!r} must look like label=768") from exc
        return self.embedding_dim

    def label_for(self, requested: str | None) -> str:
        """The label a text job or request means: its own, or the default (first configured) one."""
        labels = [s.label for s in self.specs()]
        if requested:
            return requested
        return self.default_model if self.default_model in labels else labels[0]


class CaptionSettings(_Group):
    """BLIP captioning; its text is embedded with the first CLIP model's text tower."""

    enabled: bool = Field(True, validation_alias="CAPTION_ENABLED")
    model_name: str = Field("Salesforce/blip-image-captioning-base", validation_alias="CAPTION_MODEL_NAME")
    max_length: int = Field(64, validation_alias="CAPTION_MAX_LENGTH")
    num_beams: int = Field(1, validation_alias="CAPTION_NUM_BEAMS")
    precision: Literal["auto", "fp32", "int8"] = Field("auto", validation_alias="MINDSIGHT_CAPTION_PRECISION")
    """auto: torch dynamic int8 on CPU, from the checked file `models download` made or else quantised and
    checked against fp32 at load; fp32 on GPU; int8: the same on CPU (refused on GPU); fp32 opts out."""


class FaceSettings(_Group):
    """Face detection + embedding, and the people-album clustering knobs."""

    backend: Literal["insightface", "retinaface-dlib"] = Field("insightface", validation_alias="FACE_BACKEND")
    model_name: str = Field("buffalo_l", validation_alias="FACE_MODEL_NAME")
    model_dir: Path | None = Field(None, validation_alias="FACE_MODEL_DIR")
    """Parent of the face packs; unset means MINDSIGHT_MODELS_DIR/insightface (filled in by `Settings`)."""
    model_url: str = Field(DEFAULT_FACE_MODEL_URL, validation_alias="FACE_MODEL_URL")
    """Where `mindsight models download` fetches a pack zip; `{name}` is FACE_MODEL_NAME."""
    embedding_dim: int = Field(512, validation_alias="PROCESSING_FACE_EMBEDDING_DIM")
    model_label: str = Field("arcface-buffalo_l", validation_alias="PROCESSING_DEFAULT_FACE_MODEL")
    min_score: float = Field(0.5, validation_alias="FACE_MIN_SCORE")
    det_size: int = Field(640, validation_alias="FACE_DET_SIZE")
    distance_threshold: float = Field(0.42, validation_alias="FACE_DISTANCE_THRESHOLD")
    min_faces_per_person: int = Field(2, validation_alias="MIN_FACES_PER_PERSON")
    max_photos: int = Field(0, validation_alias="MAX_PHOTOS")
    min_face_px: int = Field(24, validation_alias="FACE_MIN_SIZE_PX")
    people_state_dir: Path = Field(Path(".mindsight/people"), validation_alias="MINDSIGHT_PEOPLE_STATE_DIR")


class WorkerSettings(_Group):
    """How workers and the router batch, retry, time out, and where they run."""

    batch_size: int = Field(8, validation_alias="MINDSIGHT_BATCH_SIZE")
    batch_wait_ms: int = Field(25, validation_alias="MINDSIGHT_BATCH_WAIT_MS")
    bulk_batch_size: int = Field(32, validation_alias="MINDSIGHT_BULK_BATCH_SIZE")
    """Photos per job on the bulk lane: larger batches for throughput; a fresh upload waits at most for
    the one bulk job a worker is running, so this bounds its extra latency."""
    backfill_max_outstanding: int = Field(512, validation_alias="MINDSIGHT_BACKFILL_MAX_OUTSTANDING")
    """Most photos `mindsight backfill` lets wait in the bulk lane at once; Redis never holds the library."""
    job_timeout_s: int = Field(600, validation_alias="MINDSIGHT_JOB_TIMEOUT_S")
    max_retries: int = Field(3, validation_alias="MINDSIGHT_MAX_RETRIES")
    retry_backoff_s: str = Field("5,30,120", validation_alias="MINDSIGHT_RETRY_BACKOFF_S")
    heartbeat_s: int = Field(10, validation_alias="MINDSIGHT_HEARTBEAT_S")
    abandoned_after_s: int = Field(45, validation_alias="MINDSIGHT_ABANDONED_AFTER_S")
    gallery_pause_max_s: int = Field(300, validation_alias="MINDSIGHT_GALLERY_PAUSE_MAX_S")
    gallery_reject_after_s: int = Field(1800, validation_alias="MINDSIGHT_GALLERY_REJECT_AFTER_S")
    """A photo whose callback keeps failing this long while the gallery accepts others is dead-lettered."""
    device: Device = Field("auto", validation_alias="MINDSIGHT_DEVICE")
    replicas: int = Field(1, validation_alias="MINDSIGHT_REPLICAS")
    """Processes like this one sharing this machine's cores; MINDSIGHT_THREADS=auto gives each its share."""
    threads: int = Field(1, validation_alias="MINDSIGHT_THREADS")
    """Threads per model; `auto` (resolved here, at load) is the cores this process may use divided by
    MINDSIGHT_REPLICAS (shared.device.auto_threads)."""
    metrics_port: int = Field(0, validation_alias="MINDSIGHT_METRICS_PORT")
    metrics_host: str = Field("0.0.0.0", validation_alias="MINDSIGHT_METRICS_HOST")
    log_format: Literal["text", "json"] = Field("text", validation_alias="MINDSIGHT_LOG_FORMAT")
    log_level: str = Field("INFO", validation_alias="MINDSIGHT_LOG_LEVEL")

    @field_validator("threads", mode="before")
    @classmethod
    def _auto_threads(cls, v: object, info: ValidationInfo) -> object:
        if isinstance(v, str) and v.strip().lower() == "auto":
            from shared.device import auto_threads

            return auto_threads(info.data.get("replicas", 1))
        if isinstance(v, str) and not v.strip().isdigit():
            raise ValueError(f"must be a whole number of threads or auto, got {v!r}")
        return v

    @field_validator("batch_size", "bulk_batch_size", "backfill_max_outstanding", "threads", "replicas")
    @classmethod
    def _positive(cls, v: int) -> int:
        if v < 1:
            raise ValueError("must be at least 1")
        return v

    def backoff(self) -> list[int]:
        """Retry intervals in seconds, one per retry."""
        try:
            steps = [int(s) for s in self.retry_backoff_s.split(",") if s.strip()]
        except ValueError as exc:
            raise ConfigError(f"MINDSIGHT_RETRY_BACKOFF_S must be comma-separated seconds: {exc}") from exc
        return steps or [5]


class EmbedApiSettings(_Group):
    """The /embed_text HTTP service."""

    host: str = Field("0.0.0.0", validation_alias="EMBED_API_HOST")
    port: int = Field(8001, validation_alias="EMBED_API_PORT")
    token: SecretStr = Field(SecretStr(""), validation_alias="EMBED_API_TOKEN")
    max_text_chars: int = Field(2000, validation_alias="EMBED_API_MAX_TEXT_CHARS")
    max_batch: int = Field(64, validation_alias="EMBED_API_MAX_BATCH")
    max_body_bytes: int = Field(1024 * 1024, validation_alias="EMBED_API_MAX_BODY_BYTES")


class ModelStoreSettings(_Group):
    """Where model weights live on disk, and whether the hub may be reached."""

    models_dir: Path = Field(Path("./models"), validation_alias="MINDSIGHT_MODELS_DIR")
    offline: bool = Field(
        False, validation_alias=AliasChoices("MINDSIGHT_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


class Settings(BaseModel):
    """Everything, grouped; build it with `load_settings()`."""

    redis: RedisSettings
    gallery: GallerySettings
    paths: PathSettings
    clip: ClipSettings
    caption: CaptionSettings
    face: FaceSettings
    worker: WorkerSettings
    embed_api: EmbedApiSettings
    store: ModelStoreSettings

    @model_validator(mode="after")
    def _face_pack_in_the_models_volume(self) -> Settings:
        """One models volume holds every model: the face pack too, unless FACE_MODEL_DIR moves it."""
        if self.face.model_dir is None:
            self.face = self.face.model_copy(update={"model_dir": self.store.models_dir / FACE_PACKS_SUBDIR})
        return self


def load_settings(env_file: str | Path | None = ".env") -> Settings:
    """Read every group from the environment and `env_file` (missing file is fine)."""
    kw: dict[str, object] = {"_env_file": str(env_file) if env_file and os.path.exists(env_file) else None}
    try:
        return Settings(
            redis=RedisSettings(**kw),  # type: ignore[arg-type]
            gallery=GallerySettings(**kw),  # type: ignore[arg-type]
            paths=PathSettings(**kw),  # type: ignore[arg-type]
            clip=ClipSettings(**kw),  # type: ignore[arg-type]
            caption=CaptionSettings(**kw),  # type: ignore[arg-type]
            face=FaceSettings(**kw),  # type: ignore[arg-type]
            worker=WorkerSettings(**kw),  # type: ignore[arg-type]
            embed_api=EmbedApiSettings(**kw),  # type: ignore[arg-type]
            store=ModelStoreSettings(**kw),  # type: ignore[arg-type]
        )
    except ValueError as exc:  # pydantic.ValidationError is a ValueError
        raise ConfigError(f"invalid configuration: {exc}") from exc
