"""Roots that are refused by path: the filesystem root and well-known system directories.

Pure: takes the root already resolved (``os.path.realpath``, so a symlink to ``/etc`` is
``/etc`` here) and says why it is refused, or None. Pseudo filesystems (``/proc``, ``/sys``,
``/dev/pts``...) are refused elsewhere, by type (see ``efspurge.mounts``); ``/dev`` itself is
listed here because in a container it is often a plain tmpfs.

The list is deliberately short and predictable (see docs/safety.md):

* ``SYSTEM_TREES``: the operating system itself. Nothing in them is data that ages out, so
  the directory and everything below it are refused (``/etc/ssl``, ``/usr/local/lib``).
* ``SYSTEM_DIRS``: directories that hold everything else. Purging one of them as a whole is
  never what a scheduled clean-up means, but a directory below them can be a legitimate
  target (``/var/log/myapp``, ``/home/alice/.cache``, ``/opt/app/cache``), so only the
  directory itself is refused.
* ``STATE_PARENTS``: their direct children are applications' state (``/var/lib/mysql``,
  ``/var/lib/docker``, ``/var/lib/kubelet``): refused too, deeper directories are not.

``/tmp``, ``/var/tmp``, ``/dev/shm``, ``/mnt``, ``/media``, ``/srv``, ``/var/log``, ``/var/cache``
and anything below them are legitimate roots.
"""

from __future__ import annotations

import posixpath

SYSTEM_TREES = (
    "/bin",
    "/boot",
    "/etc",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/sbin",
    "/usr",
    "/nix",
    "/gnu",
    "/snap",
    "/var/spool/cron",
)
SYSTEM_DIRS = (
    "/",
    "/dev",
    "/home",
    "/root",
    "/run",
    "/opt",
    "/var",
    "/var/lib",
    "/var/spool",
    "/var/mail",
)
STATE_PARENTS = ("/var/lib",)


def refusal_reason(resolved_path: str) -> str | None:
    """Why ``resolved_path`` (absolute, symlinks resolved) must not be a root, or None."""
    path = posixpath.normpath(resolved_path)
    if path.startswith("//"):  # POSIX leaves a leading '//' to the system: not for us
        path = "/" + path.lstrip("/")
    if path == "/":
        return "is the filesystem root"
    for tree in SYSTEM_TREES:
        if path == tree or path.startswith(tree + "/"):
            where = "the system directory" if path == tree else "inside the system directory"
            return f"is {where} {tree}"
    if path in SYSTEM_DIRS:
        return f"is the system directory {path} (a directory below it can be a root)"
    parent = posixpath.dirname(path)
    if parent in STATE_PARENTS:
        return f"is an application's state directory (a direct child of {parent})"
    return None
