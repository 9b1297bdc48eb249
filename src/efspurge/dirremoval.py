"""A batch of empty directories to remove, as a thread runs it: ``rmdir`` each, in order.

:func:`remove_dirs` takes the :class:`Removal` items that the remover
(:mod:`efspurge.emptydirs`) made of finished empty directories, children before parents,
and fills in what became of each, for the remover to apply on the loop. Each name is
checked (``lstat``) to be the very directory that was walked before its ``rmdir``. A parent whose
descriptor was closed meanwhile is reopened first, through ``..`` of the directory, checked by
identity. Its system calls go through :mod:`efspurge.fsops` (``fsops.remove_dir``, the one
directory removal checkpoint), looked up when the batch runs, so a test's patch reaches it.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass

from aiofiles.os import wrap

from efspurge import fsops

# rmdir's answers that mean "not empty" (ENOTEMPTY or EEXIST, as POSIX allows; EBUSY: in use,
# such as NFS .nfsXXXX files): not an error, the directory stays.
NOT_EMPTY = frozenset({errno.ENOTEMPTY, errno.EEXIST, errno.EBUSY})


@dataclass(slots=True)
class Removal:
    """One finished empty directory to remove, as the remover hands it to a thread."""

    parent_fd: int | None  # None: reopen the parent through ``..`` of ``via_fd`` first
    name: str
    via_fd: int | None = None
    parent_st: os.stat_result | None = None
    st: os.stat_result | None = None  # the directory as walked: rmdir only that one
    # Filled in by the thread:
    outcome: str = ""  # "removed", "gone", "busy", "refused", "changed", "error"
    error: BaseException | None = None
    reopened_fd: int | None = None


def remove_dirs(removals: list[Removal], slots: int | None, dry_run: bool, noatime: bool) -> int:
    """rmdir each (children come before parents in the list); at most ``slots`` succeed.

    Returns the slots used. Fills in each removal's outcome.
    """
    open_parent, remove_dir, lstat = fsops.open_parent, fsops.remove_dir, fsops.lstat_at
    used = 0
    for item in removals:
        if slots is not None and used >= slots:
            item.outcome = "refused"
            continue
        parent_fd = item.parent_fd
        if parent_fd is None:
            assert item.via_fd is not None and item.parent_st is not None
            try:
                parent_fd = item.reopened_fd = open_parent(item.via_fd, item.parent_st, noatime)
            except fsops.DirectoryChanged as exc:
                item.outcome, item.error = "changed", exc
                continue
            except OSError as exc:
                item.outcome, item.error = "error", exc
                continue
        try:
            if item.st is not None and not os.path.samestat(
                lstat(item.name, dir_fd=parent_fd), item.st
            ):
                # Renamed away and another made in its place since it was walked (found by
                # review): that one was never looked at, and an application may be using it.
                item.outcome = "changed"
                item.error = fsops.DirectoryChanged("replaced since it was walked")
                continue
            remove_dir(parent_fd, item.name, dry_run)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                item.outcome = "gone"  # someone else removed it: the parent may be empty
            elif exc.errno in NOT_EMPTY:
                item.outcome = "busy"
            elif exc.errno in (errno.ENOTDIR, errno.ELOOP):
                # Swapped for a file or a symlink since it was walked: not followed, kept.
                item.outcome, item.error = "changed", fsops.DirectoryChanged(exc.strerror)
            else:
                item.outcome, item.error = "error", exc
            continue
        item.outcome = "removed"
        used += 1
    return used


# --- the batch as an awaitable in the loop's default executor (a thread pool) ---------------

aremove_dirs = wrap(remove_dirs)
