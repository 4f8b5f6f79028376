"""Structured JSON logs (one object per line on stderr), each request's carrying its request id.

API keys never reach a log: only key ids (public) are logged, and URLs are logged without their
query string (a WebSocket may carry the key there).
"""

from __future__ import annotations

import itertools
import logging
import os
import secrets
import sys
import time

import msgspec

LOGGER_NAME = "ingest_platform.gateway"
log = logging.getLogger(LOGGER_NAME)

_PREFIX = secrets.token_hex(3)
_COUNTER = itertools.count(1)
_encode = msgspec.json.Encoder().encode
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "pid": os.getpid(),
        }
        line.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return _encode(line).decode()


def configure(level: int = logging.INFO) -> None:
    """JSON lines on stderr for the gateway's logger (idempotent)."""
    if any(isinstance(h.formatter, JsonFormatter) for h in log.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    log.addHandler(handler)
    log.setLevel(level)
    log.propagate = False


def scope_request_id(scope) -> str | None:
    """The id `app.RequestIds` gave this HTTP request or WebSocket connection (None without it)."""
    return scope.get("state", {}).get("request_id")


def request_id(supplied: str | bytes | None) -> str:
    """The client's X-Request-ID when it is sane, else a new one (unique per worker process)."""
    if supplied:
        if isinstance(supplied, bytes):
            supplied = supplied.decode("latin-1")
        if len(supplied) <= 64 and supplied.isascii() and supplied.isprintable():
            return supplied
    return f"{_PREFIX}-{next(_COUNTER):x}"
