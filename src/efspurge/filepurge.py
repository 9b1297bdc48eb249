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
    protected: frozenset[tuple[int, int]] = frozenset()  # (dev, ino): our output, its dirs
    write_manifest: Callable[[str, os.stat_result], str] | None = None  # rel path -> line
    debug: bool = False
    stopped: Callable[[], bool] = lambda: False
    # The stop flag is read before every (mask + 1)th file: every 64 on a local disk, where a
    # file takes microseconds; before every file where each file is a round trip (threads),
    # so that a stop ends a batch within one round trip, even in a directory whose unlinks
    # queue behind hundreds of others on its lock (seconds each; found by review). Each read
    # is also a worker's heartbeat (efspurge.workerside).
    stop_check_mask: int = 63


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

    Only the stat this batch makes decides (never a ``DirEntry`` stat, whose descriptor may be
    gone). An expired file past the last slot, and every name after it, is not decided here:
    the names go back as ``refused``, to be looked at again when slots come back, or kept if
    none does (the loop decides).
    """
    out = FileResults()
    left = len(names) if slots is None else slots  # --max-delete slots this batch may use
    counts, age_files, age_bytes = _purge_loop(dir_fd, names, rules, left, rel_dir, out)
    out.scanned, out.slots_used, out.freed_bytes, out.vanished, out.ops, out.kept = counts
    # Counted here, once, rather than file by file in the loop: each file selected is in one
    # age bucket; each had its unlink called (a system call, unless a dry run); and each one
    # whose unlink did not fail still holds its slot (so, in a real run, it was purged).
    out.selected, out.selected_bytes = sum(age_files), sum(age_bytes)
    if not rules.dry_run:
        out.ops += out.selected
        out.purged = out.slots_used
    out.by_age = {b: [n, age_bytes[b]] for b, n in enumerate(age_files) if n}
    return out


def _purge_loop(
    dir_fd: int, names: list[str], rules: FileRules, left: int, rel: str | None, out: FileResults
) -> tuple[tuple[int, int, int, int, int, bool], list[int], list[int]]:
    """The per-file hot loop, on locals only. Returns counts (ops: lstats only), buckets.

    The names are taken in runs of ``stop_check_mask + 1``, with the stop flag read before
    each run: the inner loop then does nothing per file but the file's own work."""
    lstat, unlink, is_reg = fsops.lstat_at, fsops.unlink_file, stat.S_ISREG
    is_expired, timestamp, edges = rules.is_expired, rules.timestamp, rules.age_edges
    dry_run, debug, protected = rules.dry_run, rules.debug, rules.protected
    stopped, line_of, errors, kept_any = rules.stopped, rules.write_manifest, out.errors, False
    run = rules.stop_check_mask + 1
    age_files, age_bytes = [0] * (len(edges) + 1), [0] * (len(edges) + 1)
    scanned = freed = used = vanished = tried = 0
    for first in range(0, len(names), run):
        if stopped():
            kept_any = True  # the rest is left for the next run
            break
        tried = min(first + run, len(names))  # every name of this run gets its lstat...
        for i, name in enumerate(names[first:tried], first):
            try:
                st = lstat(name, dir_fd=dir_fd)
            except OSError as exc:
                vanished, kept_any = _failed(errors, name, "lstat", exc, vanished, kept_any)
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
            if used >= left:  # no --max-delete slot: refused, so not counted yet
                out.refused.extend(names[i:])  # ...unless the cap stops it: up to this one
                tried = i + 1
                scanned -= 1
                break
            used += 1
            bucket = bisect_right(edges, timestamp(st))
            age_files[bucket] += 1
            age_bytes[bucket] += st.st_size
            try:
                unlink(dir_fd, name, dry_run)
            except OSError as exc:
                used -= 1  # still selected (a dry run selects it too), but the slot goes back
                vanished, kept_any = _failed(errors, name, "unlink", exc, vanished, kept_any)
                continue
            if not dry_run and st.st_nlink <= 1:  # data is freed with its last link only
                freed += st.st_size
            if line_of is not None:
                out.lines.append(line_of(f"{rel}/{name}" if rel else name, st))
            if debug:
                out.debug.append((name, "deleted", st))
        if out.refused:
            break  # the --max-delete cap: no more names
    return (scanned, used, freed, vanished, tried, kept_any), age_files, age_bytes


def _failed(
    errors: list[tuple[str, str, OSError]],
    name: str,
    op: str,
    exc: OSError,
    vanished: int,
    kept_any: bool,
) -> tuple[int, bool]:
    """A failed lstat or unlink: (vanished, kept_any) after it. ENOENT means someone else
    removed the file first: not an error, and nothing stays. Any other error is recorded,
    and the file stays."""
    if exc.errno == errno.ENOENT:
        return vanished + 1, kept_any
    errors.append((name, op, exc))
    return vanished, True


def purge_dirs(
    jobs: list[tuple[int, list[str], str | None]], rules: FileRules, slots: int | None
) -> list[FileResults]:
    """Several directories' files in one call: ``jobs`` are (descriptor, names, relative
    path). The ``slots`` are shared, in order: a directory gets what the ones before it left.
    A batch of many small directories then pays one hand-off, not one per directory."""
    results = []
    used = 0
    for dir_fd, names, rel_dir in jobs:
        left = None if slots is None else slots - used
        result = purge_files(dir_fd, names, rules, left, rel_dir)
        used += result.slots_used
        results.append(result)
    return results


# --- the batches as awaitables in the loop's default executor (a thread pool) ---------------

apurge_dirs = wrap(purge_dirs)
