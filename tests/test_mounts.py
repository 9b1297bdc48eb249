"""Filesystem type detection from mountinfo, and what it decides."""

from __future__ import annotations

import os

from efspurge import mounts, plan
from efspurge.plan import choose_io_threads, choose_processes
from efspurge.settings import Settings

SAMPLE = """\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
23 22 0:21 / /proc rw,nosuid - proc proc rw
24 22 0:5 / /dev rw - devtmpfs udev rw,size=100k
25 24 0:30 / /dev/shm rw - tmpfs tmpfs rw
40 22 0:50 / /mnt/efs rw,relatime - nfs4 fs-1.efs.example:/ rw,vers=4.1
41 22 0:51 / /mnt/with\\040space rw - fuse.slowfs slowfs rw
42 22 254:0 /srv /bind rw - ext4 /dev/vda rw
"""


def dev(major, minor):
    return os.makedev(major, minor)


def test_parse_and_lookup_by_device():
    assert mounts.filesystem_type("/proc/1", dev(0, 21), SAMPLE) == "proc"
    assert mounts.filesystem_type("/dev/shm/x", dev(0, 30), SAMPLE) == "tmpfs"
    assert mounts.filesystem_type("/mnt/efs/a", dev(0, 50), SAMPLE) == "nfs4"
    assert mounts.filesystem_type("/mnt/with space", dev(0, 51), SAMPLE) == "fuse.slowfs"
    assert mounts.filesystem_type("/bind/x", dev(254, 0), SAMPLE) == "ext4"
    assert mounts.filesystem_type("/x", dev(9, 9), SAMPLE) is None


def test_classification():
    assert mounts.is_pseudo("proc") and mounts.is_pseudo("sysfs") and mounts.is_pseudo("devtmpfs")
    assert not mounts.is_pseudo("tmpfs")
    assert mounts.is_local("tmpfs") and mounts.is_local("ext4")
    assert not mounts.is_local("nfs4") and not mounts.is_local("fuse.slowfs")
    assert not mounts.is_local(None)


def test_io_threads_follow_the_filesystem_and_the_ceiling():
    base = Settings(path="/x")
    assert choose_io_threads(base, "tmpfs") == 1
    assert choose_io_threads(base, "nfs4") == 256
    assert choose_io_threads(Settings(path="/x", max_concurrency=40), "nfs4") == 40
    assert choose_io_threads(Settings(path="/x", io_threads=8), "tmpfs") == 8
    assert choose_io_threads(Settings(path="/x", io_threads=500, max_concurrency=100), None) == 100


def test_a_network_filesystem_gets_several_processes_sharing_the_threads(monkeypatch):
    base = Settings(path="/x")
    monkeypatch.setattr(plan, "available_cpus", lambda: 2)
    assert choose_processes(base, "nfs4") == 4 and choose_processes(base, "tmpfs") == 2
    # The threads are shared out, and --max-concurrency bounds the calls of all processes.
    assert choose_io_threads(base, "nfs4", processes=4) == 64
    assert choose_io_threads(Settings(path="/x", max_concurrency=40), "nfs4", processes=4) == 10
    assert choose_io_threads(Settings(path="/x", io_threads=8), "nfs4", processes=4) == 8
    assert choose_io_threads(Settings(path="/x", max_concurrency=2), "nfs4", processes=4) == 1
    assert choose_processes(Settings(path="/x", processes=1), "nfs4") == 1
    monkeypatch.setattr(plan, "available_cpus", lambda: 1)
    assert choose_processes(base, "nfs4") == 1 and choose_processes(base, "tmpfs") == 1


def test_this_machine():
    st = os.stat("/proc")
    assert mounts.filesystem_type("/proc", st.st_dev) == "proc"


# --- bind mounts of the root's own filesystem, made or moved during a run (found by review) ---

import subprocess  # noqa: E402
from contextlib import contextmanager  # noqa: E402

import pytest  # noqa: E402
from conftest import make_file, purge, snapshot  # noqa: E402

from efspurge import fsops  # noqa: E402


@contextmanager
def bind_mounts():
    """Bind mounts made by a test, all undone at its end (the suite runs as root). Yields
    bind(source, target) and the list of targets, which a test that moves one updates."""
    made: list[str] = []

    def bind(source, target) -> None:
        subprocess.run(["mount", "--bind", str(source), str(target)], check=True)
        made.append(str(target))

    try:
        yield bind, made
    finally:
        for target in reversed(made):
            subprocess.run(["umount", "-l", target], check=True)


def _once_when_listing(monkeypatch, action) -> None:
    """Run ``action`` once, right after the walk's first listing read (the root's): whatever
    it does to the tree happens mid-run, after the mount table was read at start."""
    real_read = fsops.read_entries
    done = []

    def read_then_act(listing, limit):
        entries = real_read(listing, limit)
        if not done:
            done.append(True)
            action()
        return entries

    monkeypatch.setattr(fsops, "read_entries", read_then_act)


@pytest.mark.parametrize("processes", [1, 2])
def test_a_bind_mount_made_during_the_run_is_not_entered(tmp_path, monkeypatch, processes):
    root, other = tmp_path / "root", tmp_path / "other"
    for d in range(3):
        make_file(root / f"d{d}" / "old", old=True)
    precious = {make_file(other / f"precious{i}", old=True).name for i in range(5)}
    with bind_mounts() as (bind, _):
        _once_when_listing(monkeypatch, lambda: [bind(other, root / f"d{d}") for d in range(3)])
        run = purge(root, processes=processes)
        # Nothing outside ROOT is touched: the bind mounts are mount points below ROOT.
        assert set(os.listdir(other)) == precious
        assert run.stats["mount_points_skipped"] == 3 and run.stats["files_purged"] == 0


@pytest.mark.parametrize("processes", [1, 2])
def test_a_bind_mount_moved_by_a_rename_during_the_run_is_not_entered(
    tmp_path, monkeypatch, processes
):
    # Present at start, so its path is in the mount table; a rename above it moves it to a
    # path the table does not have.
    root, other = tmp_path / "root", tmp_path / "other"
    (root / "d/sub/m").mkdir(parents=True)
    make_file(root / "d/sub/old", old=True)
    precious = {make_file(other / f"precious{i}", old=True).name for i in range(5)}
    with bind_mounts() as (bind, made):
        bind(other, root / "d/sub/m")

        def rename() -> None:
            os.rename(root / "d/sub", root / "d/sub2")
            made[0] = str(root / "d/sub2/m")  # the mount moved with it

        _once_when_listing(monkeypatch, rename)
        run = purge(root, processes=processes)
        assert set(os.listdir(other)) == precious
        assert run.stats["mount_points_skipped"] == 1 and run.stats["files_purged"] == 1
    assert snapshot(root) == {"dir:d", "dir:d/sub2", "dir:d/sub2/m"}


def test_a_directory_whose_inode_differs_from_the_listing_on_the_same_mount_is_entered(
    tmp_path, monkeypatch
):
    # Replaced by another directory between the listing and the open (or overlayfs, whose
    # listed inodes can differ): the same mount, so not a mount point; walked as before.
    root = tmp_path / "root"
    make_file(root / "d/old", old=True)

    def swap() -> None:
        os.rename(root / "d", tmp_path / "aside")
        make_file(root / "d/old2", old=True)

    _once_when_listing(monkeypatch, swap)
    run = purge(root)
    assert run.stats["mount_points_skipped"] == 0 and run.stats["files_purged"] == 1
    assert snapshot(root) == {"dir:d"}
