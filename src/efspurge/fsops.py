"""The only module that makes system calls on the tree being purged: the primitives.

Every call that reads or changes a directory entry takes a directory file descriptor and a
single name, never a path string (DESIGN.md, principle 1). Here are the primitives: opening a
directory checked by identity (and reopening one), streaming its listing, ``lstat``, closing,
and the two destructive calls. The batches that a thread or a worker process runs are built on
them, in modules of their own: :mod:`efspurge.liststep` (listing steps),
:mod:`efspurge.filepurge` (a batch of files) and :mod:`efspurge.dirremoval` (empty
directories). Each looks the primitives up through this module when it runs
(``fsops.lstat_at``, never imported by name), so a patched name here reaches every batch, in a
thread or in a forked worker process.

The two destructive calls are :func:`unlink_file` and :func:`remove_dir`: nothing else deletes.
A dry run passes through both with ``dry_run=True``; they skip the system call and nothing else,
so a dry run decides and counts exactly what a real run would.

Tests inject faults by patching the names of this module.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from itertools import islice

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


def mount_id(fd: int) -> int | None:
    """The mount an open descriptor is on (``mnt_id`` of /proc/self/fdinfo), or None if the
    kernel does not say. Read only when a listing and an open disagree (see open_subdir)."""
    try:
        with open(f"/proc/self/fdinfo/{fd}", "rb") as info:
            for line in info:
                if line.startswith(b"mnt_id:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def open_subdir(
    parent_fd: int,
    name: str,
    same_dev: int | None = None,
    expect: os.stat_result | None = None,
    noatime: bool = False,
    listed_ino: int | None = None,
    root_mount: int | None = None,
) -> tuple[int, os.stat_result]:
    """Open the directory ``name`` below ``parent_fd`` after checking that it is the listed one.

    lstat the name, open it without following symlinks, fstat the descriptor, compare (the
    pattern of CPython's ``shutil.rmtree``). Any mismatch raises DirectoryChanged. With
    ``same_dev``, a directory on another device raises OtherFilesystem before it is opened
    (lstat does not trigger an automount; open would). With ``expect`` (a reopen), the
    directory must also be the very one opened before.

    A bind mount of the root's own filesystem has the root's device: with ``same_dev`` and
    ``listed_ino`` (the inode the parent's listing showed: the directory under the mount),
    an opened directory whose inode differs is on another mount if its mount is not the
    root's ``root_mount``, and raises OtherFilesystem. (The inodes differ for a directory
    replaced since the listing too, and on overlayfs; there the mount is the root's.)
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
        if (
            same_dev is not None
            and listed_ino is not None
            and after.st_ino != listed_ino
            and (root_mount is None or mount_id(fd) != root_mount)
        ):
            raise OtherFilesystem("a mount point (a bind mount of the root's filesystem)")
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


def close(fd: int) -> None:
    os.close(fd)


def close_listing(listing: Iterator[os.DirEntry[str]]) -> None:
    listing.close()  # type: ignore[attr-defined]


# --- listings and entries ------------------------------------------------------------------


def start_listing(fd: int) -> Iterator[os.DirEntry[str]]:
    """Start streaming a directory's entries (``scandir`` on the descriptor)."""
    return os.scandir(fd)


def read_entries(listing: Iterator[os.DirEntry[str]], limit: int) -> list[os.DirEntry[str]]:
    """Read at most ``limit`` entries; fewer means the listing is exhausted."""
    return list(islice(listing, limit))


# The entry's own status (never a symlink's target), relative to its directory, called as
# ``lstat_at(name, dir_fd=fd)``. It is ``os.lstat`` itself, not a function around it: it runs
# for every file, and a Python frame around it cost ~0.1 us of the ~3 us a file takes on a
# local disk (PERFORMANCE.md, "The per-file loop").
lstat_at = os.lstat


# --- the two destructive checkpoints -------------------------------------------------------


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


# --- the reopen as an awaitable in the loop's default executor (a thread pool) --------------

areopen = wrap(reopen)
