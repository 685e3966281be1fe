"""One JSON object per line on stdout, for journald; never log secrets."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def setup(level: str) -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # uvicorn's own access log is replaced by ours (chatd.http), which knows the user.
    logging.getLogger("uvicorn.access").disabled = True
    logging.getLogger("uvicorn.error").addFilter(_uvicorn_filter)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True


def _uvicorn_filter(record: logging.LogRecord) -> bool:
    message = record.getMessage()
    # Per-connection lines from uvicorn repeat what chatd.ws logs, without the user.
    if message in ("connection open", "connection closed"):
        return False
    # A client's text frame that is not UTF-8 (closed with 1007) is bad input, not a server
    # error: uvicorn logs it at ERROR with a traceback; keep one line at info instead.
    if message.startswith("Invalid UTF-8 sequence received from client"):
        record.levelno, record.levelname = logging.INFO, "INFO"
        record.exc_info, record.exc_text = None, None
        return logging.getLogger("uvicorn.error").isEnabledFor(logging.INFO)
    return True


def monotonic_ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 2)
