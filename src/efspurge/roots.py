"""The root of a run and the run's own files: resolved, checked and opened once, at start.

Everything here happens before the walk, and every problem is a one-line SettingsError
(exit 2): nothing on the tree is touched until the root and the outputs are known to be good.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass

from efspurge import fsops, mounts
from efspurge.manifest import Manifest
from efspurge.rootcheck import refusal_reason
from efspurge.settings import Settings, SettingsError


@dataclass(frozen=True, slots=True)
class RootInfo:
    path: str
    fd: int
    st: os.stat_result
    fs_type: str | None


def prepare_root(raw_path: str, noatime: bool = False, name: str = "PATH") -> RootInfo:
    """Resolve the root once (it may be reached through a symlink) and check it.

    Raises SettingsError with a one-line message naming the root as the user gave it
    (``PATH``; the API's ``root_path``); nothing is changed on disk.
    """
    if not raw_path.strip():
        raise SettingsError(f"{name}: is empty (an unset variable in a script?); refusing to guess")
    resolved = os.path.realpath(raw_path)
    reason = refusal_reason(resolved)
    if reason is not None:
        raise SettingsError(f"{name}: refusing to purge {raw_path!r}: it {reason}")
    if resolved == "/":
        raise SettingsError(f"{name}: refusing to purge the filesystem root ({raw_path!r})")
    try:
        fd, st = fsops.open_root(resolved, noatime)
    except OSError as exc:
        reasons = {
            errno.ENOENT: "does not exist",
            errno.ENOTDIR: "is not a directory",
            errno.EACCES: "cannot be opened: permission denied",
            errno.ELOOP: "is a symlink that changed while starting",
        }
        reason = reasons.get(exc.errno, f"cannot be opened: {exc.strerror}")
        raise SettingsError(f"{name}: {raw_path!r} {reason}") from None
    _refuse_other_directory(raw_path, resolved, fd, st, name)
    fs_type = mounts.filesystem_type(resolved, st.st_dev)
    if mounts.is_pseudo(fs_type):
        fsops.close(fd)
        raise SettingsError(
            f"{name}: {raw_path!r} is on a {fs_type} pseudo-filesystem, which is never purged"
        )
    return RootInfo(resolved, fd, st, fs_type)


def _refuse_other_directory(
    raw_path: str, resolved: str, fd: int, st: os.stat_result, name: str
) -> None:
    """The root is checked and opened by its resolved path, which must be the directory the
    path as given leads to. It is not for a /proc/PID/root or /proc/PID/cwd link into another
    mount namespace (a container's): its text reads as the host's path, and the host's
    directory of that name would be purged instead of the container's (found by review)."""
    try:
        given = os.stat(raw_path)
    except OSError:
        given = None
    if given is None or not os.path.samestat(given, st):
        fsops.close(fd)
        raise SettingsError(
            f"{name}: {raw_path!r} resolves to {resolved!r}, which is not the directory the "
            "path leads to (a /proc/PID/root or /proc/PID/cwd link into another mount "
            "namespace?): give the directory's own path, as this process sees it"
        )


def open_manifest(settings: Settings, name: str = "--manifest") -> Manifest | None:
    """Open --manifest before anything is deleted. Raises SettingsError (naming the option as
    ``name``: the flag, its variable or the keyword) if it cannot be."""
    if settings.manifest is None:
        return None
    try:
        return Manifest(settings.manifest)
    except OSError as exc:
        raise SettingsError(f"{name}: cannot write {settings.manifest!r}: {exc.strerror}") from None


def check_metrics_file(settings: Settings, name: str = "--metrics-file") -> None:
    """--metrics-file is written at the end (and with each progress record): a path that can
    never be written is bad input, refused before anything is deleted. SettingsError if so."""
    path = settings.metrics_file
    if path is None:
        return
    # The folder the write will use: dirname of the path as given (abspath would fold a
    # "link/.." without following the link).
    folder = os.path.dirname(path) or "."
    if os.path.isdir(path):
        problem = "it is a directory"
    elif not os.path.isdir(folder):
        problem = f"its directory {folder!r} does not exist"
    elif not os.access(folder, os.W_OK | os.X_OK):
        problem = f"its directory {folder!r} is not writable"
    else:
        return
    raise SettingsError(f"{name}: cannot write {path!r}: {problem}")


def own_files(settings: Settings, manifest: Manifest | None) -> frozenset[tuple[int, int]]:
    """(dev, ino) of what this run writes, and of the directories that hold it, so that a run
    never deletes its own output when it lies inside the tree (an old metrics file or its
    lock file, a manifest at --max-age-days 0), nor removes the empty directory a metrics
    file is yet to be written into (found by review)."""
    ids = set()
    paths = []
    if manifest is not None:
        st = manifest.stat()  # the file this run has open
        ids.add((st.st_dev, st.st_ino))
        paths.append(os.path.dirname(os.path.abspath(manifest.path)))
    if settings.metrics_file:
        # The lock file is made once and never written: it ages like any file. Deleted, a
        # writer holding a lock on it would no longer keep this run's writer out.
        metrics = settings.metrics_file
        paths += [metrics, metrics + ".lock", os.path.dirname(os.path.abspath(metrics))]
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            continue  # not there yet: made during the run, so not old
        ids.add((st.st_dev, st.st_ino))
    return frozenset(ids)
