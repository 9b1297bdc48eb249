"""A batch of files, as a thread or a worker process runs it: lstat each, delete the expired.

:func:`purge_files` is a plain function that takes its inputs (a directory's descriptor, some
of its files' names, the :class:`FileRules`) and returns what became of them as data
(:class:`FileResults`), for the loop to apply (:mod:`efspurge.filebatches`). It runs in one of
the loop's threads, inside a listing step on a local disk (:mod:`efspurge.liststep`), or in a
worker process (:mod:`efspurge.workers`): the same function in every mode.

Its system calls go through :mod:`efspurge.fsops`, looked up once per batch: a test's patch of
``fsops.lstat_at`` or ``fsops.unlink_file`` reaches it, in a forked worker too. The loop over
the names is the hottest code of a purge (hundreds of thousands of files a second on a local
disk): it works on locals only, and everything else (the rules read into locals, the results
filled in) happens once per batch, outside it.
"""

from __future__ import annotations

import errno
import os
import stat
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiofiles.os import wrap

from efspurge import fsops


@dataclass(slots=True)
class FileRules:
    """What a thread needs to decide on files. Pure values and functions, shared read-only."""

    is_expired: Callable[[os.stat_result], bool]
    timestamp: Callable[[os.stat_result], int]  # the --age-by timestamp, for the age report
    age_edges: list[int]  # ascending bucket edges of the age report
    dry_run: bool
    protected: frozenset[tuple[int, int]] = frozenset()  # (dev, ino) of our own output files
    write_manifest: Callable[[str, os.stat_result], str] | None = None  # rel path -> line
    debug: bool = False
    stopped: Callable[[], bool] = lambda: False


@dataclass(slots=True)
class FileResults:
    """What became of a batch of regular files, for the loop to apply."""

    scanned: int = 0
    selected: int = 0
    selected_bytes: int = 0
    purged: int = 0
    freed_bytes: int = 0
    vanished: int = 0
    slots_used: int = 0
    ops: int = 0  # system calls made (lstat, unlink), for --max-ops-per-second
    kept: bool = False  # something stays in the directory
    by_age: dict[int, list[int]] = field(default_factory=dict)
    refused: list[str] = field(default_factory=list)  # expired, but no --max-delete slot left
    errors: list[tuple[str, str, OSError]] = field(default_factory=list)  # (name, op, error)
    lines: list[str] = field(default_factory=list)  # manifest lines of this batch
    debug: list[tuple[str, str, Any]] = field(default_factory=list)  # (name, event, detail)


def purge_files(
    dir_fd: int, names: list[str], rules: FileRules, slots: int | None, rel_dir: str | None
) -> FileResults:
    """lstat each file, delete the expired ones (at most ``slots`` of them; None = no cap).

    The per-file hot loop: names and counts are locals, added to the result once. Only the
    stat this loop makes decides (never a ``DirEntry`` stat, whose descriptor may be gone).
    """
    out = FileResults()
    lstat, unlink, is_reg = fsops.lstat_at, fsops.unlink_file, stat.S_ISREG
    is_expired, timestamp, edges = rules.is_expired, rules.timestamp, rules.age_edges
    dry_run, debug, protected, line_of = rules.dry_run, rules.debug, rules.protected, None
    if rules.write_manifest is not None:
        line_of = rules.write_manifest
    stopped, errors, kept_any = rules.stopped, out.errors, False
    left = len(names) if slots is None else slots  # --max-delete slots this batch may use
    age_files = [0] * (len(edges) + 1)
    age_bytes = [0] * (len(edges) + 1)
    scanned = selected = selected_bytes = purged = freed = used = vanished = ops = 0
    try:
        for i, name in enumerate(names):
            if not i & 63 and stopped():
                kept_any = True  # the rest is left for the next run
                break
            ops += 1
            try:
                st = lstat(dir_fd, name)
            except OSError as exc:
                if exc.errno == errno.ENOENT:
                    vanished += 1  # someone else removed it first: not an error
                else:
                    errors.append((name, "lstat", exc))
                    kept_any = True
                continue
            if not is_reg(st.st_mode):
                kept_any = True  # replaced since the listing: not a file we decided on
                continue
            scanned += 1
            if not is_expired(st) or (protected and (st.st_dev, st.st_ino) in protected):
                kept_any = True
                if debug:
                    out.debug.append((name, "kept", st))
                continue
            if used >= left:
                # No --max-delete slot: these are looked at again when slots come back, or
                # kept if none does (the loop decides). So this one is not counted yet.
                out.refused.extend(names[i:])
                scanned -= 1
                break
            used += 1
            size = st.st_size
            selected += 1
            selected_bytes += size
            bucket = bisect_right(edges, timestamp(st))
            age_files[bucket] += 1
            age_bytes[bucket] += size
            ops += not dry_run
            try:
                unlink(dir_fd, name, dry_run)
            except OSError as exc:
                used -= 1  # still selected (a dry run selects it too), but the slot goes back
                if exc.errno == errno.ENOENT:
                    vanished += 1
                else:
                    errors.append((name, "unlink", exc))
                    kept_any = True
                continue
            if not dry_run:
                purged += 1
                # A file's data is freed with its last link: a hard link elsewhere keeps it.
                if st.st_nlink <= 1:
                    freed += size
            if line_of is not None:
                out.lines.append(line_of(f"{rel_dir}/{name}" if rel_dir else name, st))
            if debug:
                out.debug.append((name, "deleted", st))
    finally:
        out.scanned, out.selected, out.selected_bytes = scanned, selected, selected_bytes
        out.purged, out.freed_bytes, out.slots_used = purged, freed, used
        out.vanished, out.kept, out.ops = vanished, kept_any, ops
        out.by_age = {b: [n, age_bytes[b]] for b, n in enumerate(age_files) if n}
    return out


# --- the batch as an awaitable in the loop's default executor (a thread pool) ---------------

apurge_files = wrap(purge_files)
