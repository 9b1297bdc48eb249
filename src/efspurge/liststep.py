"""Listing steps, as a thread runs them: open a directory, read some entries, sort them.

:func:`list_steps` is the batch that :mod:`efspurge.listing` hands to a thread: for each
directory, the lstat and the open checked by identity (a new directory), then up to a limit of
entries of its listing, sorted into regular files, subdirectories and what is left alone
(symlinks, special files, excluded entries). On a local disk the files are deleted right there
(:func:`efspurge.filepurge.purge_files`, one hand-off for the whole step). Everything comes back
as data (:class:`ListResults`) for the loop to apply.

The system calls go through :mod:`efspurge.fsops`, looked up when the step runs, so a test's
patch of ``fsops.open_subdir`` or ``fsops.read_entries`` reaches it. The entry types come from
the listing's ``d_type``; only on a filesystem that reports ``DT_UNKNOWN`` does ``DirEntry``
make an ``lstat`` of its own to learn one.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from aiofiles.os import wrap

from efspurge import fsops
from efspurge.filepurge import FileResults, FileRules, purge_files


@dataclass(slots=True)
class ListResults:
    """One step of a directory's listing: what the loop needs to go on."""

    fd: int | None = None  # the directory's descriptor (opened by this step, or given)
    st: os.stat_result | None = None
    listing: Iterator[os.DirEntry[str]] | None = None  # still open: more entries to read
    refused: str | None = None  # "gone", "changed", "mount" or "error": not entered
    refusal: BaseException | None = None
    started: bool = False  # the listing was started in this step (a directory scanned)
    entries: int = 0  # entries read in this step
    ops: int = 0  # system calls made (open, lstat, unlink; the loop counts listing reads)
    files: list[str] = field(default_factory=list)  # regular files not processed here
    subdirs: list[str] = field(default_factory=list)
    subdir_inos: list[int] = field(default_factory=list)  # their inodes, as listed (d_ino)
    symlinks: int = 0
    specials: int = 0
    excluded_files: int = 0
    excluded_dirs: int = 0
    dirs_named_by_exclude: list[str] = field(default_factory=list)  # walked all the same
    other_shards: int = 0
    theirs_stay: bool = False  # a sharded dry run: another shard's file would stay
    kept: bool = False
    errors: list[tuple[str | None, str, OSError]] = field(default_factory=list)
    debug: list[tuple[str, str, Any]] = field(default_factory=list)
    file_results: FileResults | None = None


@dataclass(slots=True)
class ListRules:
    """What a thread needs to sort a listing. Pure values and functions, shared read-only."""

    same_dev: int | None
    noatime: bool
    mount_points: frozenset[str]  # relative paths of mount points below the root (at start)
    root_mount: int | None  # the root's mount id: a bind mount below it is another mount
    file_filter: Callable[[str, str | None], bool] | None  # --include/--exclude
    dir_filter: Callable[[str, str | None], bool] | None  # --exclude-dir (True: excluded)
    owner_filter: Callable[[int, str], bool] | None  # shards: is this file ours?
    theirs_stay: Callable[[int, list[str]], bool] | None  # sharded dry run (dir_fd, names)
    debug: bool = False
    # --exclude, asked of directories: one it names is walked all the same (said once).
    exclude_names: Callable[[str, str | None], bool] | None = None


def list_step(
    parent_fd: int | None,
    name: str,
    fd: int | None,
    listing: Iterator[os.DirEntry[str]] | None,
    rel: str | None,
    key: int,
    ino: int | None,
    rules: ListRules,
    limit: int,
    files: FileRules | None,
    slots: int | None,
) -> ListResults:
    """Open a directory if ``fd`` is None, then read up to ``limit`` entries and sort them.

    With ``files`` the regular files found are processed right here (one hand-off for the
    whole step: the local-disk path); without, they are returned for the loop to spread over
    several threads (the network path).
    """
    out = ListResults(fd=fd, listing=listing)
    if fd is None and not _enter(out, parent_fd, name, rel, ino, rules):
        return out
    if out.listing is None:
        try:
            out.listing = fsops.start_listing(out.fd)
        except OSError as exc:
            out.errors.append((None, "list directory", exc))
            out.kept = True
            return out
        out.started = True
    _read_listing(out, rel, key, rules, limit)
    if files is not None and out.files:
        out.file_results = purge_files(out.fd, out.files, files, slots, rel)
        out.ops += out.file_results.ops
        out.files = []
    return out


def _enter(
    out: ListResults,
    parent_fd: int | None,
    name: str,
    rel: str | None,
    ino: int | None,
    rules: ListRules,
) -> bool:
    """Open a new directory, checked by identity, and by mount when it must stay on the
    root's filesystem. False: not entered (``out.refused``)."""
    assert parent_fd is not None
    out.ops = 2  # the lstat and the open
    try:
        if rel is not None and rel in rules.mount_points:
            raise fsops.OtherFilesystem("a mount point (listed in /proc/self/mountinfo at start)")
        out.fd, out.st = fsops.open_subdir(
            parent_fd,
            name,
            rules.same_dev,
            noatime=rules.noatime,
            listed_ino=ino,
            root_mount=rules.root_mount,
        )
    except fsops.OtherFilesystem as exc:
        out.refused, out.refusal = "mount", exc
    except fsops.DirectoryChanged as exc:
        out.refused, out.refusal = "changed", exc
    except OSError as exc:
        out.refused, out.refusal = ("gone" if exc.errno == errno.ENOENT else "error"), exc
    return out.refused is None


def list_steps(
    steps: list[tuple[int | None, str, int | None, Any, str | None, int, int | None]],
    rules: ListRules,
    limit: int,
    batch_size: int,
    files: FileRules | None,
    slots: int | None,
) -> list[ListResults | None]:
    """Several directories' steps in one thread call, until ``batch_size`` entries were read:
    a tree of many small directories then pays one hand-off per call, not per directory.
    A step not taken (budget spent, or the run stopping) is None."""
    results: list[ListResults | None] = []
    entries = used = 0
    for parent_fd, name, fd, listing, rel, key, ino in steps:
        if entries >= batch_size or (files is not None and files.stopped()):
            results.append(None)
            continue
        left = None if slots is None else slots - used
        result = list_step(parent_fd, name, fd, listing, rel, key, ino, rules, limit, files, left)
        if result.file_results is not None:
            used += result.file_results.slots_used
        entries += result.entries
        results.append(result)
    return results


def _read_listing(out: ListResults, rel: str | None, key: int, rules: ListRules, limit: int):
    entries = _read_entries(out, limit)
    if rules.file_filter is None and rules.owner_filter is None:
        # The common case, per entry the hottest loop of the walk: regular files by d_type in
        # one comprehension (no system call unless the filesystem reports DT_UNKNOWN); the
        # rest, usually a few directories, sorted below.
        try:
            out.files = [e.name for e in entries if e.is_file(follow_symlinks=False)]
        except OSError:
            out.files = []  # a DT_UNKNOWN entry vanished: sort them all one by one instead
        else:
            if len(out.files) == len(entries):
                return
            entries = [e for e in entries if not _is_file(e)]
    _sort_entries(out, entries, rel, key, rules)


def _read_entries(out: ListResults, limit: int) -> list[os.DirEntry[str]]:
    """Read up to ``limit`` entries of the listing; close it once it is exhausted."""
    listing = out.listing
    assert listing is not None
    try:
        entries = fsops.read_entries(listing, limit)
    except OSError as exc:
        out.errors.append((None, "list directory", exc))
        out.kept = True
        entries = []
    if len(entries) < limit:
        fsops.close_listing(listing)
        out.listing = None
    out.entries = len(entries)
    return entries


def _sort_entries(
    out: ListResults, entries: list[os.DirEntry[str]], rel: str | None, key: int, rules: ListRules
) -> None:
    """Sort entries one by one: files (filtered, and by shard), directories, the rest."""
    file_filter, dir_filter, owner_filter = rules.file_filter, rules.dir_filter, rules.owner_filter
    exclude_names = rules.exclude_names
    add_file, add_dir, debug = out.files.append, out.subdirs.append, rules.debug
    add_ino = out.subdir_inos.append
    theirs: list[str] = []
    for entry in entries:
        name = entry.name
        try:
            if entry.is_file(follow_symlinks=False):
                if file_filter is not None and not file_filter(name, _child(rel, name)):
                    out.excluded_files += 1
                    out.kept = True
                    if debug:
                        out.debug.append((name, "excluded by a pattern", None))
                elif owner_filter is not None and not owner_filter(key, name):
                    out.other_shards += 1
                    theirs.append(name)
                else:
                    add_file(name)
            elif entry.is_dir(follow_symlinks=False):
                if dir_filter is not None and dir_filter(name, _child(rel, name)):
                    out.excluded_dirs += 1
                    out.kept = True
                    if debug:
                        out.debug.append((name, "excluded by --exclude-dir", None))
                else:
                    add_dir(name)
                    add_ino(entry.inode())  # from the listing (d_ino): no system call
                    if exclude_names is not None and exclude_names(name, _child(rel, name)):
                        out.dirs_named_by_exclude.append(name)
            else:
                if entry.is_symlink():
                    out.symlinks += 1
                else:
                    out.specials += 1
                out.kept = True
                if debug:
                    out.debug.append((name, "symlink or special file, never followed", None))
        except OSError as exc:  # DT_UNKNOWN, and the lstat that replaces it failed
            if exc.errno != errno.ENOENT:
                out.errors.append((name, "lstat", exc))
                out.kept = True
    if theirs and rules.theirs_stay is not None and rules.theirs_stay(out.fd, theirs):
        out.theirs_stay = True


def _is_file(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_file(follow_symlinks=False)
    except OSError:
        return False


def _child(rel: str | None, name: str) -> str | None:
    if rel is None:
        return None
    return f"{rel}/{name}" if rel else name


def any_stays(dir_fd: int, names: list[str], is_expired: Callable[[os.stat_result], bool]):
    """Would any of these files (another shard's) survive a real run? Sharded dry runs only:
    a real run lets rmdir tell whether the other shards emptied a directory."""
    lstat = fsops.lstat_at
    for name in names:
        try:
            st = lstat(name, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                continue
            return True
        if not stat.S_ISREG(st.st_mode) or not is_expired(st):
            return True
    return False


# --- the batch as an awaitable in the loop's default executor (a thread pool) ---------------

alist_steps = wrap(list_steps)
