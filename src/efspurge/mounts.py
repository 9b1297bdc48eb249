"""What filesystem a path is on, read from ``/proc/self/mountinfo``.

Used twice: to refuse a pseudo-filesystem as the root (by type, not by path prefix, so
``/dev/shm`` and other tmpfs roots stay legitimate), and to choose how many I/O threads to use
(a local filesystem answers in microseconds and more threads only fight over the GIL; a network
filesystem answers in milliseconds and wants many requests in flight).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

MOUNTINFO = "/proc/self/mountinfo"

PSEUDO_TYPES = frozenset(
    {
        "proc", "sysfs", "devtmpfs", "devpts", "cgroup", "cgroup2", "debugfs", "tracefs",
        "securityfs", "pstore", "bpf", "configfs", "fusectl", "mqueue", "efivarfs",
        "binfmt_misc", "nsfs", "selinuxfs", "rpc_pipefs", "hugetlbfs",
    }
)  # fmt: skip

# Filesystems whose metadata operations are served by this kernel from local memory or disk.
LOCAL_TYPES = frozenset(
    {
        "ext2", "ext3", "ext4", "xfs", "btrfs", "tmpfs", "ramfs", "f2fs", "zfs", "overlay",
        "jfs", "reiserfs", "vfat", "msdos", "exfat", "ntfs", "ntfs3", "hfs", "hfsplus",
        "bcachefs", "nilfs2", "squashfs", "iso9660", "udf", "erofs",
    }
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Mount:
    major: int
    minor: int
    mount_point: str
    fs_type: str


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo octal.
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit() and i + 4 <= len(field):
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> list[Mount]:
    mounts = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields = left.split()
        after = right.split()
        if len(fields) < 5 or not after:
            continue
        major, _, minor = fields[2].partition(":")
        mounts.append(Mount(int(major), int(minor), _unescape(fields[4]), after[0]))
    return mounts


def _read_mountinfo() -> str:
    try:
        with open(MOUNTINFO, encoding="utf-8", errors="surrogateescape") as f:
            return f.read()
    except OSError:
        return ""


def mount_points_below(root: str, mountinfo: str | None = None) -> frozenset[str]:
    """Every mount point strictly below ``root`` (an absolute, resolved path)."""
    if mountinfo is None:
        mountinfo = _read_mountinfo()
    prefix = root.rstrip("/") + "/"
    return frozenset(
        m.mount_point for m in parse_mountinfo(mountinfo) if m.mount_point.startswith(prefix)
    )


def filesystem_type(path: str, st_dev: int, mountinfo: str | None = None) -> str | None:
    """The type of the filesystem holding ``path`` (whose ``st_dev`` is given), or None."""
    if mountinfo is None:
        mountinfo = _read_mountinfo()
    major, minor = os.major(st_dev), os.minor(st_dev)
    best: Mount | None = None
    for mount in parse_mountinfo(mountinfo):
        if (mount.major, mount.minor) != (major, minor):
            continue
        inside = path == mount.mount_point or path.startswith(mount.mount_point.rstrip("/") + "/")
        if best is None or (inside and len(mount.mount_point) > len(best.mount_point)):
            best = mount
    return best.fs_type if best else None


def is_pseudo(fs_type: str | None) -> bool:
    return fs_type in PSEUDO_TYPES


def is_local(fs_type: str | None) -> bool:
    """Unknown types count as remote: more threads cost a little on a local disk, while too
    few on a network filesystem cost a factor of a hundred."""
    return fs_type in LOCAL_TYPES
