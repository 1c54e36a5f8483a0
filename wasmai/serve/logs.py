"""Structured logs of ``wasmai serve``: one JSON object per line on stderr.

Every record has ``ts`` (ISO 8601 UTC), ``level``, ``logger`` and ``msg``; the fields a call
passes with ``extra=`` (``event``, ``model``, ``version``, ``reason``; an access line's
``method``, ``path``, ``status``, ``duration_ms``, ...) are added as they are. JSON escapes every
control character, so text a client or a component chose cannot forge lines or colour a
terminal.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

#: Attributes every LogRecord has; anything else came in through ``extra=``.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        doc = {"ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
               "level": record.levelname.lower(), "logger": record.name, "msg": record.getMessage()}
        doc.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def configure(level: int = logging.INFO) -> None:
    """Send the ``wasmai.serve`` loggers to stderr as JSON lines (once per process)."""
    logger = logging.getLogger("wasmai.serve")
    if any(getattr(h, "_wasmai_json", False) for h in logger.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler._wasmai_json = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
