#!/usr/bin/env python3
"""How much does one GIL cost threads that wait on round trips? Processes x threads, measured.

    python benchmarks/gilcrowds.py --work /dev/shm/gilcrowds --shapes 1x100,2x50,4x25,8x13

For each shape PxT and round: generate the EFS-like balanced tree (10x2x200: 100 directories
of 200 files, half of them old) on a tmpfs backing store, mount it through slowfs with the
EFS-like latencies (remounted per run: cold caches), list it through the mount (not timed:
the kernel then holds the entries and their attributes, as after efspurge's listing), then
time the deleting phase alone: the 100 directories spread over P forked processes of T
threads each, every thread taking one directory at a time and doing what a file batch does
(lstat each file by descriptor and name, unlink the old ones). It prints the wall time of that
phase and the CPU time of the processes doing it, per shape: the medians over the rounds.

This is the measurement behind `--processes auto` being 4 on a network filesystem
(PERFORMANCE.md, "GIL crowds"): the calls in flight are the same in every shape (one per
directory, since a directory's unlinks wait for its lock anyway); only the number of threads
that share one GIL changes. `--phase list` times the listing instead, from cold caches: the
directories above the leaves are listed first (not timed), then the 100 leaf directories are
read (`scandir`, the entry types as efspurge reads them) by P processes of T threads.
Needs root (FUSE) and slowfs (--slowfs-dir or $SLOWFS_DIR).
With EFSPURGE_BENCH_TINY=1 (the tests), a tree of a few dozen files and one round.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # the tree generator and the slowfs helpers (imported after the path is set)

EFS_LIKE = (
    "lat_getattr=1000 lat_readdir=1000 lat_unlink=2500 lat_rmdir=2500 lat_other=500 "
    "lat_opendir=0 entry_timeout=3 attr_timeout=3"
)


def leaf_dirs(root: Path) -> list[tuple[str, list[str]]]:
    """Every directory that holds files, with its files' names (listed through the mount)."""
    return [(top, files) for top, _, files in os.walk(root) if files]


def purge_dir(item: tuple[str, list[str]], cutoff: float) -> None:
    path, names = item
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for name in names:
            if os.lstat(name, dir_fd=fd).st_mtime < cutoff:
                os.unlink(name, dir_fd=fd)
    finally:
        os.close(fd)


def list_dir(path: str) -> int:
    with os.scandir(path) as entries:
        return sum(1 for entry in entries if not entry.is_dir(follow_symlinks=False))


def unlisted_leaves(root: Path, depth: int) -> list[str]:
    """The directories `depth` levels below root, found by listing only the levels above."""
    level = [str(root)]
    for _ in range(depth):
        level = [entry.path for path in level for entry in os.scandir(path) if entry.is_dir()]
    return level


def timed_phase(work, items: list, processes: int, threads: int) -> tuple:
    """(wall seconds, CPU seconds) of `work` over `items` with `processes` x `threads`."""
    before, start = os.times(), time.perf_counter()
    children = []
    for index in range(processes):
        pid = os.fork()
        if pid == 0:
            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(work, items[index::processes]))
            os._exit(0)
        children.append(pid)
    for pid in children:
        os.waitpid(pid, 0)
    wall, after = time.perf_counter() - start, os.times()
    cpu = (after.children_user - before.children_user) + (
        after.children_system - before.children_system
    )
    return wall, cpu


def measure(slowfs: Path, work: Path, shape: str, scenario, phase: str) -> tuple[float, float]:
    processes, threads = (int(n) for n in shape.split("x"))
    backing, mount = work / "backing", work / "mnt"
    shutil.rmtree(backing, ignore_errors=True)
    backing.mkdir(parents=True)
    mount.mkdir(parents=True, exist_ok=True)
    scenario.generate(backing / "tree")
    subprocess.run(
        [str(slowfs / "mount.sh"), str(backing), str(mount), *EFS_LIKE.split()],
        check=True,
        capture_output=True,
    )
    try:
        if phase == "list":
            leaves = unlisted_leaves(mount / "tree", scenario.params[1])
            return timed_phase(list_dir, leaves, processes, threads)
        cutoff = time.time() - bench.AGE_DAYS * 86400
        dirs = leaf_dirs(mount / "tree")
        return timed_phase(lambda d: purge_dir(d, cutoff), dirs, processes, threads)
    finally:
        subprocess.run([str(slowfs / "umount.sh"), str(mount)], capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/dev/shm/gilcrowds"))
    parser.add_argument("--shapes", default="1x100,2x50,4x25,8x13,16x7")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--phase", choices=["delete", "list"], default="delete")
    parser.add_argument("--slowfs-dir", type=Path)
    args = parser.parse_args()
    slowfs = bench.find_slowfs(args.slowfs_dir)
    scenario = bench.Scenario.parse("balanced:10x2x200")
    if bench.tiny_mode():
        scenario, args.rounds = scenario.tiny(), 1
    shapes = args.shapes.split(",")
    runs: dict[str, list[tuple[float, float]]] = {shape: [] for shape in shapes}
    for _ in range(args.rounds):
        for shape in shapes:  # interleaved: a slower minute hits every shape alike
            runs[shape].append(measure(slowfs, args.work, shape, scenario, args.phase))
    print(f"| processes x threads | {args.phase} phase, wall (s) | CPU (s) | rounds |")
    print("|---|---|---|---|")
    for shape, results in runs.items():
        wall = statistics.median(r[0] for r in results)
        cpu = statistics.median(r[1] for r in results)
        print(f"| {shape} | {wall:.3f} | {cpu:.2f} | {len(results)} |")
    shutil.rmtree(args.work, ignore_errors=True)


if __name__ == "__main__":
    main()
