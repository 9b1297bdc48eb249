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
