"""JSON line logging on stdout, in the record shape of the reference interface.

Every record is one line: ``timestamp``, ``level``, ``message``, ``logger`` and the structured
fields under ``extra_fields`` (an empty object when a record has none).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from pythonjsonlogger.json import JsonFormatter

LOGGER_NAME = "efspurge"


class _RecordFormatter(JsonFormatter):
    def add_fields(
        self, log_record: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        super().add_fields(log_record, record, message_dict)
        log_record.setdefault("extra_fields", {})
        if record.exc_info and "exc_info" in log_record:
            log_record["extra_fields"] = {
                **log_record["extra_fields"],
                "traceback": log_record.pop("exc_info"),
            }


def setup_logging(
    level: str, stream: Any = None, handler: logging.Handler | None = None
) -> logging.Logger:
    """JSON lines on ``stream`` (stdout), unless another handler (terminal mode) is given."""
    logger = logging.getLogger(LOGGER_NAME)
    logger.handlers.clear()
    if handler is None:
        handler = logging.StreamHandler(stream if stream is not None else sys.stdout)
        handler.setFormatter(
            _RecordFormatter(
                "%(asctime)s %(levelname)s %(message)s %(name)s",
                rename_fields={"asctime": "timestamp", "levelname": "level", "name": "logger"},
            )
        )
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    return logger
