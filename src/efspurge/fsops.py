"""The only module that makes system calls on the tree being purged.

Every call that reads or changes a directory entry takes a directory file descriptor and a
single name, never a path string (DESIGN.md, principle 1). The functions here are the batches
that the engine hands to its thread pool: each is a plain function that takes its inputs and
returns its results as data (names, stats, outcomes, errors); none of them touches the walk's
state, which lives on the event loop (see :mod:`efspurge.walker`). The ``a*`` names at the end
are the same batches wrapped with ``aiofiles.os.wrap``, so that ``await`` runs them in the
loop's default executor.

The two destructive calls are :func:`unlink_file` and :func:`remove_dir`: nothing else deletes.
A dry run passes through both with ``dry_run=True``; they skip the system call and nothing else,
so a dry run decides and counts exactly what a real run would.

Tests inject faults by patching the names of this module.
"""

from __future__ import annotations

import errno
import os
import stat
from bisect import bisect_right
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from aiofiles.os import wrap

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
NOATIME = getattr(os, "O_NOATIME", 0)
# Entries counted as one listing request for --max-ops-per-second (an NFS READDIRPLUS reply,
# a FUSE readdir page, carries a hundred or two).
ENTRIES_PER_READ = 128


class OtherFilesystem(Exception):
    """The directory is a mount point of another filesystem (and crossing was not allowed)."""


class DirectoryChanged(Exception):
    """The directory is no longer the one the listing showed (swapped, replaced, moved).

    Raised instead of following it; the caller skips the entry and counts it.
    """


# --- opening and closing directories -------------------------------------------------------


def _open_dir(name: str, dir_fd: int | None, noatime: bool) -> int:
    if noatime and NOATIME:
        try:
            return os.open(name, DIR_FLAGS | NOATIME, dir_fd=dir_fd)
        except PermissionError:
            pass  # O_NOATIME needs ownership (or CAP_FOWNER): fall back to a plain open
    return os.open(name, DIR_FLAGS, dir_fd=dir_fd)


def open_root(path: str, noatime: bool = False) -> tuple[int, os.stat_result]:
    """Open the already-resolved root. Raises OSError (ENOTDIR, EACCES, ELOOP, ...)."""
    fd = _open_dir(path, None, noatime)
    try:
        return fd, os.fstat(fd)
    except BaseException:
        os.close(fd)
        raise


def open_subdir(
    parent_fd: int,
    name: str,
    same_dev: int | None = None,
    expect: os.stat_result | None = None,
    noatime: bool = False,
) -> tuple[int, os.stat_result]:
    """Open the directory ``name`` below ``parent_fd`` after checking that it is the listed one.

    lstat the name, open it without following symlinks, fstat the descriptor, compare (the
    pattern of CPython's ``shutil.rmtree``). Any mismatch raises DirectoryChanged. With
    ``same_dev``, a directory on another device raises OtherFilesystem before it is opened
    (lstat does not trigger an automount; open would). With ``expect`` (a reopen), the
    directory must also be the very one opened before.
    """
    before = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
    if not stat.S_ISDIR(before.st_mode):
        raise DirectoryChanged(f"no longer a directory (mode {before.st_mode:o})")
    if same_dev is not None and before.st_dev != same_dev:
        raise OtherFilesystem(f"device {before.st_dev} is not the root's {same_dev}")
    if expect is not None and not os.path.samestat(before, expect):
        raise DirectoryChanged("not the directory opened before")
    try:
        fd = _open_dir(name, parent_fd, noatime)
    except OSError as exc:
        # O_NOFOLLOW gives ELOOP for a symlink, O_DIRECTORY gives ENOTDIR for anything else.
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise DirectoryChanged(f"replaced while opening ({exc.strerror})") from None
        raise
    try:
        after = os.fstat(fd)
        if not os.path.samestat(before, after):
            raise DirectoryChanged("replaced between lstat and open")
        return fd, after
    except BaseException:
        os.close(fd)
        raise


def open_parent(child_fd: int, expected: os.stat_result, noatime: bool = False) -> int:
    """Reopen a directory through ``..`` of an open child, checked by identity.

    If ``..`` is not the directory the walk opened (the subtree was moved), raises
    DirectoryChanged: nothing is removed through a directory that is not the one we walked.
    """
    fd = _open_dir("..", child_fd, noatime)
    try:
        if not os.path.samestat(os.fstat(fd), expected):
            raise DirectoryChanged("parent directory moved")
        return fd
    except BaseException:
        os.close(fd)
        raise


def close(fd: int) -> None:
    os.close(fd)


def close_listing(listing: Iterator[os.DirEntry[str]]) -> None:
    listing.close()  # type: ignore[attr-defined]


def start_listing(fd: int) -> Iterator[os.DirEntry[str]]:
    """Start streaming a directory's entries (``scandir`` on the descriptor)."""
    return os.scandir(fd)


def read_entries(listing: Iterator[os.DirEntry[str]], limit: int) -> list[os.DirEntry[str]]:
    """Read at most ``limit`` entries; fewer means the listing is exhausted."""
    return list(islice(listing, limit))


def lstat_at(dir_fd: int, name: str) -> os.stat_result:
    """The entry's own status (never a symlink's target), relative to its directory."""
    return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)


# --- the batches ------------------------------------------------------------------------------


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
    lstat, unlink, is_reg = lstat_at, unlink_file, stat.S_ISREG
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


def reopen(anchor_fd: int, path: list[tuple[str, os.stat_result]], noatime: bool) -> int:
    """Reopen a directory down from an open ancestor, each step checked against the identity
    recorded when the walk first opened it (DirectoryChanged on any difference)."""
    fd = anchor_fd
    try:
        for name, expect in path:
            child, _ = open_subdir(fd, name, expect=expect, noatime=noatime)
            if fd != anchor_fd:
                os.close(fd)
            fd = child
    except BaseException:
        if fd != anchor_fd:
            os.close(fd)
        raise
    return fd


# --- the two destructive checkpoints ---------------------------------------------------------


def unlink_file(dir_fd: int, name: str, dry_run: bool) -> None:
    """THE file deletion checkpoint. A dry run returns here, having decided everything."""
    if dry_run:
        return
    os.unlink(name, dir_fd=dir_fd)


def remove_dir(parent_fd: int, name: str, dry_run: bool) -> None:
    """THE directory removal checkpoint. ``rmdir`` only ever removes an empty directory."""
    if dry_run:
        return
    os.rmdir(name, dir_fd=parent_fd)


# --- the batches as awaitables in the loop's default executor (a thread pool) -----------------

areopen = wrap(reopen)
apurge_files = wrap(purge_files)
