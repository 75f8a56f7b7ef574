"""Logging for people (default) or for log shippers (``--log-format json``).

One logger, ``paramedic``; the daemon logs one line per state change, not per probe.
Every message passes the config's redactor before it is written.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

LOGGER = logging.getLogger("paramedic")
_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def _utc(record: logging.LogRecord) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{stamp}.{int(record.msecs):03d}Z"


class TextFormatter(logging.Formatter):
    """``2026-11-27T11:20:00.123Z WARNING check app-health: OK -> FAILING(1) ...``."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_utc(record)} {record.levelname:<7} {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``msg`` and any ``extra=`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {"ts": _utc(record), "level": record.levelname.lower(), "msg": record.getMessage()}
        doc.update({k: v for k, v in vars(record).items() if k not in _RESERVED and not k.startswith("_")})
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


class RedactingFilter(logging.Filter):
    """Masks known secrets in the message and in extra fields (set by the daemon per config)."""

    def __init__(self) -> None:
        super().__init__()
        from agent.kernel.redact import Redactor

        self.redactor = Redactor()

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.redactor.text(record.getMessage())
        record.args = None
        for key, value in list(vars(record).items()):
            if key not in _RESERVED and isinstance(value, str | dict | list):
                setattr(record, key, self.redactor.data(value))
        return True


def setup_logging(fmt: str = "text", level: str = "INFO") -> RedactingFilter:
    """Configure the ``paramedic`` logger on stderr; returns the redacting filter to update."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    redacting = RedactingFilter()
    handler.addFilter(redacting)
    LOGGER.handlers[:] = [handler]
    LOGGER.setLevel(level.upper())
    LOGGER.propagate = False
    return redacting
