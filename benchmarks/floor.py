#!/usr/bin/env python3
"""The CPython floor: the least a Python purge can do, as a peer for bench.py.

    python benchmarks/bench.py --root-base /dev/shm/bench --tools efspurge,find,floor \
        --tool 'floor=python3 benchmarks/floor.py {root} {days}'

Walks ROOT depth first with descriptors (openat, scandir on the descriptor), lstats every
regular file the listing shows and unlinks it if its mtime is older than DAYS: the system
calls `find -delete` makes, with CPython's cost per call and nothing else (no caps, no
counts, no safety checks, no threads, no asyncio). What efspurge spends above this is its
own; what this spends above `find` is the interpreter's (PERFORMANCE.md).
"""

from __future__ import annotations

import os
import sys
import time

FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def purge_dir(fd: int, cutoff_ns: int) -> list[str]:
    """Delete the old files of one directory; return its subdirectories' names."""
    lstat, unlink = os.lstat, os.unlink
    subdirs = []
    with os.scandir(fd) as listing:
        for entry in listing:
            if entry.is_file(follow_symlinks=False):
                if lstat(entry.name, dir_fd=fd).st_mtime_ns < cutoff_ns:
                    unlink(entry.name, dir_fd=fd)
            elif entry.is_dir(follow_symlinks=False):
                subdirs.append(entry.name)
    return subdirs


def main(root: str, days: float) -> None:
    cutoff_ns = time.time_ns() - round(days * 86_400 * 1e9)
    top = os.open(root, FLAGS)
    # Each level: a directory's descriptor and the names of its subdirectories still to walk.
    stack = [(top, iter(purge_dir(top, cutoff_ns)))]
    while stack:
        fd, names = stack[-1]
        name = next(names, None)
        if name is None:
            os.close(fd)
            stack.pop()
            continue
        child = os.open(name, FLAGS, dir_fd=fd)
        stack.append((child, iter(purge_dir(child, cutoff_ns))))


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]))
