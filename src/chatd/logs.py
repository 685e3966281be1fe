"""One JSON object per line on stdout, for journald; never log secrets."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson

# uvicorn adds `color_message` (the same text with ANSI colours) to some lines: not for journald.
_RESERVED = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "color_message"}
THROTTLE_WINDOW_S = 10.0
THROTTLE_LINES = 5
_throttle: dict[str, tuple[float, int, int]] = {}  # key -> (window start, lines, suppressed)


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
    logging.getLogger("uvicorn.error").addFilter(_structure_websocket_line)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True


def _structure_websocket_line(record: logging.LogRecord) -> bool:
    """uvicorn's '%s - "WebSocket %s" [accepted]' handshake line as fields, like chatd's own.

    The client address is the real one: uvicorn's proxy-headers middleware has already put
    nginx's X-Forwarded-For into the scope it formats from.
    """
    args = record.args
    if (
        isinstance(record.msg, str)
        and record.msg.startswith('%s - "WebSocket %s"')
        and isinstance(args, tuple)
    ):
        outcome = record.msg.rpartition(" ")[2]
        record.msg, record.args = "ws handshake", ()
        record.client = args[0]
        record.path = str(args[1]).partition("?")[0]  # never log a query string
        record.outcome = args[2] if outcome == "%d" and len(args) > 2 else outcome.strip("[]")
    return True


def throttled(
    logger: logging.Logger, key: str, event: str, level: int = logging.WARNING, **fields: Any
) -> None:
    """Log at most THROTTLE_LINES lines per `key` per THROTTLE_WINDOW_S; the next line that
    gets through says how many were left out (`suppressed`). `exc_info` may be in `fields`."""
    now = time.monotonic()
    start, lines, suppressed = _throttle.get(key, (now, 0, 0))
    if now - start >= THROTTLE_WINDOW_S:
        start, lines = now, 0
    if lines >= THROTTLE_LINES:
        _throttle[key] = (start, lines, suppressed + 1)
        return
    _throttle[key] = (start, lines + 1, 0)
    exc_info = fields.pop("exc_info", None)
    if suppressed:
        fields["suppressed"] = suppressed
    logger.log(level, event, extra=fields, exc_info=exc_info)


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
