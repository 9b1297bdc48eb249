"""The audit manifest (--manifest FILE): one JSON line per file deleted (or, in a dry run,
that would be) and per directory removed.

Lines are written by the worker threads, a chunk at a time in one write() under a lock (no
user-space buffer), so the file is complete up to the last finished chunk at any moment; the
run always finishes its chunk on SIGTERM, and the file is fsync'ed when the run ends.

Paths are relative to the root. A path that is not valid UTF-8 (names are bytes on Linux)
cannot be a JSON string losslessly, so such a line carries ``path_b64`` (the exact bytes,
base64) next to a readable ``path`` in which the undecodable bytes appear as ``\\xNN``.
"""

from __future__ import annotations

import base64
import errno
import fcntl
import json
import os
import threading
from datetime import UTC, date, datetime

# The nanosecond range of years 1-9999, where ``mtime`` is plain ISO 8601.
_MIN_NS = int((datetime(1, 1, 1, tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds())
_MIN_NS *= 1_000_000_000
_MAX_NS = (date.max.toordinal() + 1 - date(1970, 1, 1).toordinal()) * 86_400 * 1_000_000_000

# Actions, the same words in a dry run and a real run but for the "would_" prefix.
DELETE, WOULD_DELETE, RMDIR, WOULD_RMDIR = "delete", "would_delete", "rmdir", "would_rmdir"


def path_fields(relpath: str) -> dict[str, str]:
    try:
        relpath.encode("utf-8")
        return {"path": relpath}
    except UnicodeEncodeError:
        raw = os.fsencode(relpath)
        return {
            "path": raw.decode("utf-8", "backslashreplace"),
            "path_b64": base64.b64encode(raw).decode("ascii"),
        }


_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_MAX_ORDINAL = date.max.toordinal()
_DAYS_PER_400_YEARS = 146_097  # the Gregorian calendar repeats every 400 years


def iso_utc(ns: int) -> str:
    """Nanoseconds since the epoch as ISO 8601 in UTC, for any integer: never raises.

    Inside years 1-9999 the text is ``datetime.isoformat()``'s (microseconds, truncated,
    shown when not zero). Outside, the year is written in ISO 8601's expanded form with a sign
    (``-0001-12-31T23:59:59+00:00``, ``+10000-01-01T00:00:00+00:00``), computed with the
    proleptic Gregorian calendar. Integer arithmetic only: no float rounding.
    """
    seconds, below = divmod(ns, 1_000_000_000)
    days, second_of_day = divmod(seconds, 86_400)
    ordinal = _EPOCH_ORDINAL + days
    cycles = 0
    if not 1 <= ordinal <= _MAX_ORDINAL:
        cycles = days // _DAYS_PER_400_YEARS  # move into the 1970-2370 cycle
        ordinal -= cycles * _DAYS_PER_400_YEARS
    day = date.fromordinal(ordinal)
    hour, rest = divmod(second_of_day, 3600)
    minute, second = divmod(rest, 60)
    clock = f"{hour:02d}:{minute:02d}:{second:02d}"
    micro = below // 1000
    if micro:
        clock += f".{micro:06d}"
    year = day.year + 400 * cycles
    year_text = f"{year:04d}" if 1 <= year <= 9999 else f"{year:+05d}"
    return f"{year_text}-{day.month:02d}-{day.day:02d}T{clock}+00:00"


def file_line(action: str, relpath: str, size: int, mtime_ns: int) -> str:
    """One manifest line. Never raises on odd metadata: a file's timestamp is data.

    ``mtime`` is ISO 8601 (see ``iso_utc``); when its year is outside 1-9999 (possible on
    tmpfs and other filesystems with 64-bit seconds), the line also carries ``mtime_ns``, the
    exact integer, since most date parsers reject expanded years.
    """
    record: dict[str, object] = {"action": action, **path_fields(relpath), "size": size}
    record["mtime"] = iso_utc(mtime_ns)
    if not _MIN_NS <= mtime_ns < _MAX_NS:
        record["mtime_ns"] = mtime_ns
    return json.dumps(record, ensure_ascii=False) + "\n"


def dir_line(action: str, relpath: str) -> str:
    return json.dumps({"action": action, **path_fields(relpath)}, ensure_ascii=False) + "\n"


class ManifestError(OSError):
    """The manifest could not be written: the audit trail is incomplete from here on.

    An ``OSError`` (``errno``/``strerror`` are the failed call's, ``filename`` the manifest's
    path) so that existing ``except OSError`` keep working; raised by ``Manifest.write`` and
    ``Manifest.close``. The file still ends with a complete line (see ``Manifest.write``).

    ``unwritten`` holds the lines of the failed batch that are not in the file (each ends with
    a newline): the caller can report them elsewhere, since they may describe files already
    deleted. ``torn`` is True only when a partial line could not be removed from the file
    (another process of the run appended after it, or the truncation itself failed).
    """

    def __init__(
        self,
        errno_: int | None,
        message: str,
        path: str,
        unwritten: tuple[str, ...] = (),
        torn: bool = False,
    ) -> None:
        super().__init__(errno_, message, path)
        self.unwritten = unwritten
        self.torn = torn


class Manifest:
    """The manifest file. ``lines`` counts the lines this process wrote completely.

    After the first failure every later ``write`` raises ``ManifestError`` at once, without
    touching the file: a run must not go on deleting once its audit trail is broken.
    """

    def __init__(self, path: str, append: bool = False) -> None:
        # Opened before the walk starts: a manifest that cannot be written stops the run
        # before anything is deleted. O_APPEND, and one write() per batch: several processes
        # of one run (--processes) can share the file without tearing each other's lines.
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
        self.path = path
        self._fd = os.open(path, flags if append else flags | os.O_TRUNC, 0o644)
        self._lock = threading.Lock()
        self.lines = 0
        self.failed: ManifestError | None = None
        try:
            os.lseek(self._fd, 0, os.SEEK_CUR)
            self._seekable = True
        except OSError:
            self._seekable = False
        self._cause = ""

    def write(self, lines: list[str]) -> None:
        """Append complete lines (each ends with a newline), or raise ``ManifestError``.

        A write can be partial (a full filesystem takes what fits, then refuses the rest with
        ENOSPC; EIO, EDQUOT, EFBIG likewise). Then the complete lines that made it stay, the
        torn tail is cut off with ``ftruncate`` (to the offset where the last complete line
        ends, only if nothing was appended after it since), ``lines`` counts only the complete
        lines, and ``ManifestError`` carries the lines that are not in the file.
        """
        if not lines:
            return
        data = "".join(lines).encode("utf-8")
        with self._lock:
            if self.failed is not None:
                raise ManifestError(
                    self.failed.errno,
                    f"--manifest: not written since an earlier failure: {self._cause}",
                    self.path,
                    tuple(lines),
                )
            written = 0
            start = end = -1  # file offsets of this batch's bytes, when contiguous
            try:
                while written < len(data):
                    count = os.write(self._fd, data[written:])
                    # O_APPEND: the offset is now the end of what this write appended.
                    offset = self._offset()
                    if offset < 0 or (written and offset - count != end):
                        start = -1  # unknown, or another process appended in between
                    elif not written:
                        start = offset - count
                    end = offset
                    written += count
            except OSError as exc:
                raise self._fail(exc, lines, data, written, start, end) from exc
            self.lines += len(lines)

    def stat(self) -> os.stat_result:
        return os.fstat(self._fd)

    def _offset(self) -> int:
        """The file offset, or -1 where there is none (a pipe: --manifest /dev/stdout)."""
        if not self._seekable:
            return -1
        try:
            return os.lseek(self._fd, 0, os.SEEK_CUR)
        except OSError:
            return -1

    def _fail(
        self, exc: OSError, lines: list[str], data: bytes, written: int, start: int, end: int
    ) -> ManifestError:
        complete = data.rfind(b"\n", 0, written) + 1  # bytes of whole lines written
        kept = data[:complete].count(b"\n")
        torn = False
        if complete < written:
            torn = not self._cut(start + complete if start >= 0 else -1, end)
        self.lines += kept
        error = ManifestError(
            exc.errno,
            f"--manifest: cannot write: {exc.strerror or exc}; {len(lines) - kept} of "
            f"{len(lines)} lines of the last batch are not in the file"
            + (" and the file may end with a partial line" if torn else ""),
            self.path,
            tuple(lines[kept:]),
            torn,
        )
        self.failed = error
        self._cause = exc.strerror or str(exc)
        return error

    def _cut(self, good: int, end: int) -> bool:
        """Truncate the file to ``good`` if it still ends at ``end``. True when done."""
        if good < 0:
            return False
        try:
            # A POSIX lock (per process, unlike flock, which forked processes would share)
            # serializes the repairs of the run's processes. Normal writes take no lock (a
            # lock on NFS costs round trips and cache flushes): a process appending between
            # the check and the truncation is possible in theory, and only on a full disk.
            fcntl.lockf(self._fd, fcntl.LOCK_EX)
            try:
                if os.fstat(self._fd).st_size != end:
                    return False
                os.ftruncate(self._fd, good)
                return True
            finally:
                fcntl.lockf(self._fd, fcntl.LOCK_UN)
        except OSError:
            return False

    def close(self) -> None:
        """fsync and close. Raises ``ManifestError`` when the data could not be made durable
        (on NFS a write error often shows only here); the descriptor is closed either way."""
        with self._lock:
            try:
                os.fsync(self._fd)
            except OSError as exc:
                if exc.errno == errno.EINVAL:  # a pipe or FIFO (--manifest /dev/stdout)
                    return
                raise ManifestError(
                    exc.errno,
                    f"--manifest: cannot flush to disk: {exc.strerror or exc}",
                    self.path,
                ) from exc
            finally:
                os.close(self._fd)
