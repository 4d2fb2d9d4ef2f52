"""Process-wide logging: readable text by default, one JSON object per line with MINDSIGHT_LOG_FORMAT=json."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record; `extra={...}` fields become top-level keys."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def silence_progress_bars() -> None:
    """Turn off the tqdm bars of huggingface_hub and transformers (downloads, "Loading checkpoint shards").

    They write carriage-return redraws straight to stderr, which breaks one-JSON-object-per-line logs.
    transformers reads huggingface_hub's switch when it is imported, and has its own once it is.
    """
    try:
        from huggingface_hub.utils import disable_progress_bars
    except ImportError:  # the slim image may lack it: then nothing draws bars either
        return
    disable_progress_bars()
    if "transformers" in sys.modules:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()


def configure_logging(level: str = "INFO", fmt: str = "text") -> None:
    """Install one stderr handler on the root logger (idempotent)."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
        silence_progress_bars()
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("httpx", "httpcore", "urllib3", "PIL", "rq.worker", "rq.queue", "rq.scheduler", "rq.job"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
