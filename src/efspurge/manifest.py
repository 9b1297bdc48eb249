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
import json
import os
import threading
from datetime import UTC, datetime

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


def file_line(action: str, relpath: str, size: int, mtime_ns: int) -> str:
    record = {"action": action, **path_fields(relpath), "size": size}
    record["mtime"] = datetime.fromtimestamp(mtime_ns / 1e9, UTC).isoformat()
    return json.dumps(record, ensure_ascii=False) + "\n"


def dir_line(action: str, relpath: str) -> str:
    return json.dumps({"action": action, **path_fields(relpath)}, ensure_ascii=False) + "\n"


class Manifest:
    def __init__(self, path: str, append: bool = False) -> None:
        # Opened before the walk starts: a manifest that cannot be written stops the run
        # before anything is deleted. O_APPEND, and one write() per batch: several processes
        # of one run (--processes) can share the file without tearing each other's lines.
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
        self._fd = os.open(path, flags if append else flags | os.O_TRUNC, 0o644)
        self._lock = threading.Lock()
        self.lines = 0

    def write(self, lines: list[str]) -> None:
        if not lines:
            return
        data = memoryview("".join(lines).encode("utf-8"))
        with self._lock:
            while data:
                written = os.write(self._fd, data)
                data = data[written:]
            self.lines += len(lines)

    def stat(self) -> os.stat_result:
        return os.fstat(self._fd)

    def close(self) -> None:
        with self._lock:
            os.fsync(self._fd)
            os.close(self._fd)
