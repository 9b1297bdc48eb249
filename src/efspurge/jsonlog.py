"""JSON line logging on stdout, in the record shape of the reference interface.

Every record is one line: ``timestamp``, ``level``, ``message``, ``logger`` and the structured
fields under ``extra_fields`` (an empty object when a record has none).

Every line is valid JSON for a strict parser, in ASCII. Names on Linux are bytes, and a name
that is not valid UTF-8 reaches Python as a string with lone surrogates (``\\udcff``), which
strict JSON parsers reject. Such a string is written with each undecodable byte shown as
``\\xNN`` (a literal backslash, x and two hex digits), and the field ``<key>_b64`` next to it
carries the exact bytes (base64), as in the manifest: ``"path": "a\\xff.log"``,
``"path_b64": "Yf8ubG9n"``.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import logging
import os
import sys
import threading
from collections.abc import Callable
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

    def process_log_record(self, log_record: dict[str, Any]) -> dict[str, Any]:
        return valid_text(super().process_log_record(log_record))


def _raw_bytes(text: str) -> bytes:
    try:
        return text.encode("utf-8", "surrogateescape")  # the bytes a name really has
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")  # a surrogate from elsewhere


def valid_text(value: Any) -> Any:
    """``value`` with every string made valid Unicode (see the module docstring)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return _raw_bytes(value).decode("utf-8", "backslashreplace")
        return value
    if isinstance(value, dict):
        cleaned: dict[Any, Any] = {}
        for key, item in value.items():
            # A key can be a name too (the report by top-level directory): shown, not b64.
            name = valid_text(key)
            cleaned[name] = valid_text(item)
            if isinstance(item, str) and cleaned[name] is not item:
                cleaned[f"{name}_b64"] = base64.b64encode(_raw_bytes(item)).decode("ascii")
        return cleaned
    if isinstance(value, list | tuple):
        return [valid_text(item) for item in value]
    return value


def _is_broken_pipe(exc: BaseException | None) -> bool:
    return isinstance(exc, BrokenPipeError) or (
        isinstance(exc, OSError) and exc.errno in (errno.EPIPE, errno.ECONNRESET)
    )


class _OutputGuard:
    """Turns a failed write of the records into one callback and silence.

    Installed as the handler's ``handleError``: an error that is not the output's (a bug in
    formatting) keeps the standard behaviour. On the first ``OSError``, the handler drops
    every later record, the stream's descriptor is pointed at /dev/null (so that the
    interpreter's final flush does not print "Exception ignored ..." either), and
    ``on_output_lost(closed)`` is called once, in the thread that was logging: ``closed`` is
    True when the reader went away (``efspurge ROOT | head -1``), False when the output
    failed (a full disk behind ``> run.log``, an I/O error), which is also said on stderr in
    one line: the records, the final one included, are lost.
    """

    def __init__(
        self,
        handler: logging.Handler,
        stream: Any,
        on_output_lost: Callable[[bool], None] | None,
        owns_stdout: bool,
    ) -> None:
        self._handler = handler
        self._stream = stream
        self._owns_stdout = owns_stdout
        self._standard = handler.handleError
        self._callback = on_output_lost
        self._lock = threading.Lock()
        self.lost: OSError | None = None  # the first error, once the output is lost

    def __call__(self, record: logging.LogRecord) -> None:
        exc = sys.exc_info()[1]
        if not isinstance(exc, OSError) or isinstance(exc, BlockingIOError | InterruptedError):
            # Not the output's failure (a bug in formatting), or a passing one: a stdout left
            # non-blocking by whoever started us, momentarily full. That record is lost, as
            # logging does; the run goes on.
            self._standard(record)
            return
        with self._lock:
            if self.lost is not None:
                return
            self.lost = exc
        self._handler.addFilter(lambda _record: False)
        if self._owns_stdout:
            # The command line's own process only: a library must not take its caller's
            # descriptor 1 away.
            self._point_at_devnull()
        closed = _is_broken_pipe(exc)
        if not closed:
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.write(
                    f"efspurge: cannot write the log to its output ({exc.strerror or exc}): "
                    "stopping; the records from here on, the final one too, are lost\n"
                )
                sys.stderr.flush()
        if self._callback is not None:
            self._callback(closed)

    def _point_at_devnull(self) -> None:
        stream = self._stream if self._stream is not None else sys.stdout
        try:
            fd = stream.fileno()
        except (AttributeError, OSError, ValueError):
            return  # not a real file (a StringIO in tests): nothing to flush at exit
        devnull = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.dup2(devnull, fd)
        finally:
            os.close(devnull)


def setup_logging(
    level: str,
    stream: Any = None,
    handler: logging.Handler | None = None,
    on_output_lost: Callable[[bool], None] | None = None,
    owns_stdout: bool = False,
) -> logging.Logger:
    """JSON lines on ``stream`` (stdout), unless another handler (terminal mode) is given.

    When the output cannot be written (its reader went away, or a full disk), no traceback is
    printed: the output is silenced and ``on_output_lost`` is called once (from the logging
    thread; the engine uses it as a stop request, see ``_OutputGuard``). ``owns_stdout``: the
    process is efspurge's (the command line), so its stdout may be pointed at /dev/null.
    """
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
    handler.handleError = _OutputGuard(  # type: ignore[method-assign]
        handler, getattr(handler, "stream", stream), on_output_lost, owns_stdout
    )
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    return logger
