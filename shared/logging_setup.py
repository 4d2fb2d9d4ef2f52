"""Process-wide logging: readable text by default, one JSON object per line with MINDSIGHT_LOG_FORMAT=json.

Both formats mask the credentials of any URL in a record (message, extra fields, traceback): a password in
REDIS_URL or API_BASE_URL must not reach a log, whichever exception or library message carried it.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from types import TracebackType
from typing import Any

from shared.redaction import redact

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: message`, with URL credentials masked."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per record; `extra={...}` fields become top-level keys; URL credentials masked."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                out[key] = redact(value) if isinstance(value, str) else value
        if record.exc_info:
            out["exc"] = redact(self.formatException(record.exc_info))
        return redact(json.dumps(out, default=str))  # non-str extras rendered by default=str


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
        handler.setFormatter(TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Uncaught exceptions go through the handler too, so their tracebacks are masked like any record.
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_uncaught_in_thread
    for noisy in ("httpx", "httpcore", "urllib3", "PIL", "rq.worker", "rq.queue", "rq.scheduler", "rq.job"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def _log_uncaught(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, exc, tb)
        return
    logging.getLogger("mindsight").critical("uncaught exception", exc_info=(kind, exc, tb))


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit or args.exc_value is None:
        return
    name = args.thread.name if args.thread is not None else "?"
    logging.getLogger("mindsight").error("uncaught exception in thread %s", name, exc_info=args.exc_value)
