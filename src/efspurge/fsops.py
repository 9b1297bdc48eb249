"""The only module that makes system calls on the tree being purged.

Every call that reads or changes a directory entry takes a directory file descriptor and a
single name, never a path string, so a directory renamed or swapped for a symlink while the
tool runs cannot redirect it outside the tree. Tests inject faults by patching the functions of
this module; nothing else in the package touches ``os`` for tree operations.

The two destructive functions, :func:`unlink_file` and :func:`remove_dir`, are the only places
that delete anything. A dry run calls them too, with ``dry_run=True``: they skip the system
call and nothing else, so a dry run counts exactly what a real run would do.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from itertools import islice

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

# Kinds of the entries that are neither files nor directories, as told by the listing's d_type.
SYMLINK, OTHER = "symlink", "other"


class OtherFilesystem(Exception):
    """The directory is a mount point of another filesystem (and crossing was not allowed)."""


class DirectoryChanged(Exception):
    """The directory is no longer the one the listing showed (swapped, replaced, a symlink).

    Raised instead of following it. The caller skips the entry and counts it.
    """


def open_root(path: str) -> tuple[int, os.stat_result]:
    """Open the already-resolved root. Raises OSError (ENOTDIR, EACCES, ELOOP, ...)."""
    fd = os.open(path, _DIR_FLAGS)
    try:
        return fd, os.fstat(fd)
    except BaseException:
        os.close(fd)
        raise


def open_subdir(
    parent_fd: int, name: str, same_dev: int | None = None
) -> tuple[int, os.stat_result]:
    """Open the directory ``name`` below ``parent_fd`` after checking it is the listed one.

    lstat the name, open it without following symlinks, fstat the descriptor, and compare:
    the pattern of CPython's ``shutil.rmtree``. Any mismatch raises DirectoryChanged. With
    ``same_dev``, a directory on another device (a mount point) raises OtherFilesystem before
    it is opened (lstat does not trigger an automount; open would).
    """
    before = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
    if not stat.S_ISDIR(before.st_mode):
        raise DirectoryChanged(f"no longer a directory (mode {before.st_mode:o})")
    if same_dev is not None and before.st_dev != same_dev:
        raise OtherFilesystem(f"device {before.st_dev} is not the root's {same_dev}")
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
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


def open_parent(child_fd: int, expected: os.stat_result) -> int:
    """Reopen a parent directory through ``..`` of an open child, checked by identity.

    Used to remove a directory whose parent's descriptor was closed to keep descriptors
    bounded. If ``..`` is not the directory the walk opened (the tree was moved), raises
    DirectoryChanged.
    """
    fd = os.open("..", _DIR_FLAGS, dir_fd=child_fd)
    try:
        if not os.path.samestat(os.fstat(fd), expected):
            raise DirectoryChanged("parent directory moved")
        return fd
    except BaseException:
        os.close(fd)
        raise


def close(fd: int) -> None:
    os.close(fd)


def scan(dir_fd: int) -> Iterator[os.DirEntry[str]]:
    """Start streaming a directory's entries (``scandir`` on the descriptor)."""
    return os.scandir(dir_fd)


def read_entries(entries: Iterator[os.DirEntry[str]], limit: int) -> list[os.DirEntry[str]]:
    """Read at most ``limit`` entries; fewer means the listing is exhausted."""
    return list(islice(entries, limit))


def close_scan(entries: Iterator[os.DirEntry[str]]) -> None:
    entries.close()  # type: ignore[attr-defined]


def sort_entries(
    entries: list[os.DirEntry[str]],
) -> tuple[list[os.DirEntry[str]], list[os.DirEntry[str]], list[tuple[os.DirEntry[str], int]]]:
    """Split a batch by d_type into (files, directories, others with their kind).

    Only a filesystem that reports DT_UNKNOWN costs an lstat here, and that lstat is cached
    in the entry, so :func:`lstat_entry` does not repeat it. An entry whose lstat fails is
    returned among the others with the OSError as its kind.
    """
    files: list[os.DirEntry[str]] = []
    dirs: list[os.DirEntry[str]] = []
    others: list[tuple[os.DirEntry[str], object]] = []
    add_file = files.append
    for entry in entries:
        try:
            if entry.is_file(follow_symlinks=False):
                add_file(entry)
            elif entry.is_dir(follow_symlinks=False):
                dirs.append(entry)
            elif entry.is_symlink():
                others.append((entry, SYMLINK))
            else:
                others.append((entry, OTHER))
        except OSError as exc:
            others.append((entry, exc))
    return files, dirs, others


def lstat_entry(entry: os.DirEntry[str]) -> os.stat_result:
    """The entry's own status (never a symlink's target), relative to the listed directory."""
    return entry.stat(follow_symlinks=False)


def restore_times(dir_fd: int, st: os.stat_result) -> None:
    """Put a directory's access and modification times back to what they were before this
    run removed entries in it (as systemd-tmpfiles does), so that the purge itself does not
    make the directory look recently used to the young-directory rule of later runs."""
    os.utime(dir_fd, ns=(st.st_atime_ns, st.st_mtime_ns))


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
