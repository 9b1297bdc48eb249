"""Regression tests for the cases the engine rebuild (issue "Engine v2") was filed for. Each of
these gave a wrong answer, a hang or a loss with the old engine; each checks the disk."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import (
    EFSPURGE,
    OLD,
    age_dirs,
    final,
    make_file,
    purge,
    records,
    run_cli,
    snapshot,
    tmpfs_mount,
)

MODES = [
    pytest.param({"processes": 1}, id="1-process"),
    pytest.param({"processes": 2}, id="2-processes"),
    pytest.param({"processes": 3}, id="3-processes"),
    pytest.param({"processes": 1, "io_threads": 8, "task_batch_size": 7}, id="8-threads"),
]


def old_files(directory: Path, count: int) -> None:
    for i in range(count):
        make_file(directory / f"f{i:03d}", old=True)


def fanout_tree(root: Path, depth: int = 4, fanout: int = 3, files: int = 20) -> int:
    """Every directory holds `files` old files and `fanout` subdirectories, `depth` levels
    below root, every directory old. Returns the number of directories below root."""
    count = 0
    level = [root]
    for _ in range(depth):
        below = []
        for parent in level:
            for i in range(fanout):
                child = parent / f"d{i}"
                old_files(child, files)
                below.append(child)
                count += 1
        level = below
    age_dirs(root)
    return count


@pytest.mark.parametrize("mode", MODES)
def test_max_delete_equal_to_the_old_files_deletes_them_all_and_is_not_a_stop(tmp_path, mode):
    old_files(tmp_path, 10)
    run = purge(tmp_path, max_delete=10, **mode)
    assert snapshot(tmp_path) == set()
    assert run.stats["files_purged"] == 10 and run.code == 0
    assert run.stats["stop_reason"] is None
    make_file(tmp_path / "more", old=True)
    old_files(tmp_path / "d", 10)
    capped = purge(tmp_path, max_delete=10, **mode)
    assert capped.stats["files_purged"] == 10 and capped.code == 4
    assert len(snapshot(tmp_path)) == 2  # one file, and the directory it may be in


def test_max_delete_with_the_defaults_of_the_command_line(tmp_path):
    root = tmp_path / "root"
    old_files(root, 10)
    result = run_cli(str(root), "--max-delete", "10", "--log-format", "json")
    assert result.returncode == 0, result.stdout[-2000:]
    assert final(result.stdout)["files_purged"] == 10 and not os.listdir(root)


@pytest.mark.parametrize("mode", MODES)
def test_every_emptied_directory_goes_in_one_run(tmp_path, mode):
    dirs = fanout_tree(tmp_path)
    run = purge(tmp_path, remove_empty_dirs=True, max_empty_dirs_to_delete=0, **mode)
    assert snapshot(tmp_path) == set()
    assert run.stats["empty_dirs_deleted"] == dirs == 120
    assert run.stats["files_purged"] == 20 * 120


def test_concurrent_shards_remove_every_emptied_directory(tmp_path):
    root = tmp_path / "root"
    dirs = fanout_tree(root)
    env = {k: v for k, v in os.environ.items() if not k.startswith("EFSPURGE_")}
    procs = [
        subprocess.Popen(
            [EFSPURGE, str(root), "--remove-empty-dirs", "--max-empty-dirs-to-delete", "0",
             "--shard-count", "2", "--shard-index", str(i), "--log-format", "json"],
            stdout=subprocess.PIPE, text=True, env=env,
        )
        for i in range(2)
    ]  # fmt: skip
    stats = [final(p.communicate(timeout=120)[0]) for p in procs]
    assert snapshot(root) == set()
    assert sum(s["empty_dirs_deleted"] for s in stats) == dirs
    assert sum(s["files_purged"] for s in stats) == 20 * dirs


@pytest.mark.parametrize("cap", [10, 37])
@pytest.mark.parametrize("mode", MODES)
def test_dry_run_reports_exactly_what_the_real_run_removes_under_a_cap(tmp_path, mode, cap):
    fanout_tree(tmp_path / "a")
    subprocess.run(["cp", "-a", str(tmp_path / "a"), str(tmp_path / "b")], check=True)
    options = {"remove_empty_dirs": True, "max_empty_dirs_to_delete": cap, **mode}
    dry = purge(tmp_path / "a", dry_run=True, **options)
    real = purge(tmp_path / "b", **options)
    assert dry.stats["empty_dirs_to_delete"] == real.stats["empty_dirs_deleted"] == cap
    removed = 120 - sum(1 for p in snapshot(tmp_path / "b") if p.startswith("dir:"))
    assert removed == cap


def test_an_error_on_a_megabyte_long_path_is_logged_and_the_run_ends(deep_tmp, monkeypatch):
    # The old multi-process mode hung for ever when a child logged a line over 1 MiB. Workers
    # now return errors as data and only the parent logs: a 1.1 MB path is just a long line.
    from efspurge import fsops

    name = "n" * 250
    fd = os.open(deep_tmp, os.O_RDONLY)
    for _ in range(4400):
        os.mkdir(name, dir_fd=fd)
        nfd = os.open(name, os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = nfd
    for leaf in ("stuck", "old"):
        os.close(os.open(leaf, os.O_CREAT | os.O_WRONLY, dir_fd=fd))
        os.utime(leaf, (OLD, OLD), dir_fd=fd)
    os.close(fd)
    real_unlink = fsops.unlink_file

    def refuse_stuck(dir_fd, leaf, dry_run):
        if leaf == "stuck":
            raise PermissionError(13, "Permission denied")
        return real_unlink(dir_fd, leaf, dry_run)

    monkeypatch.setattr(fsops, "unlink_file", refuse_stuck)
    run = purge(deep_tmp, processes=2)
    assert run.stats["files_purged"] == 1 and run.stats["errors"] == 1 and run.code == 1
    warning = next(r for r in run.log if r["message"] == "unlink failed, skipping")
    assert len(warning["extra_fields"]["path"]) > 1_100_000


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_a_signal_to_the_whole_process_group_is_one_stop(tmp_path, signum, code):
    # systemd and some runtimes signal the whole group (and a closed terminal hangs up its
    # whole foreground group): the workers ignore it and the parent stops once, with its
    # final record and a manifest that holds every deletion.
    root = tmp_path / "root"
    for d in range(40):
        old_files(root / f"d{d}", 50)
    manifest = tmp_path / "m.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith("EFSPURGE_")}
    proc = subprocess.Popen(
        [EFSPURGE, str(root), "--processes", "2", "--manifest", str(manifest),
         "--max-ops-per-second", "2000", "--progress-interval", "0.05", "--log-format", "json"],
        stdout=subprocess.PIPE, text=True, env=env, start_new_session=True,
    )  # fmt: skip
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if json.loads(line)["message"] == "Progress":
            os.killpg(proc.pid, signum)
            break
    rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == code
    stats = final("".join(lines) + rest)
    assert stats["stop_reason"] == signal.Signals(signum).name
    deleted = {f"d{d}/f{i:03d}" for d in range(40) for i in range(50)}
    deleted -= {p.split(":", 1)[1] for p in snapshot(root) if p.startswith("file:")}
    recorded = {json.loads(line)["path"] for line in manifest.read_text().splitlines()}
    assert recorded == deleted and stats["files_purged"] == len(deleted) > 0


@pytest.fixture
def strictatime_mount(tmp_path):
    with tmpfs_mount(tmp_path / "atime", "strictatime,size=16m") as mount_point:
        yield mount_point


def test_a_dry_run_by_atime_does_not_change_directory_atimes(strictatime_mount):
    root = strictatime_mount / "root"
    for d in ("a", "b/c"):
        make_file(root / d / "f", old=True)
    dirs = [root, root / "a", root / "b", root / "b" / "c"]
    for path in dirs:
        os.utime(path, (OLD, OLD))

    def dir_atimes() -> list[int]:
        return [os.stat(path).st_atime_ns for path in dirs]  # stat reads, it does not list

    before = dir_atimes()
    os.listdir(root / "a")  # strictatime: a listing without O_NOATIME does change it
    assert dir_atimes() != before
    os.utime(root / "a", (OLD, OLD))
    first = purge(root, dry_run=True, age_by="atime", remove_empty_dirs=True)
    assert dir_atimes() == before  # O_NOATIME: listing read nothing that a later run reads
    second = purge(root, dry_run=True, age_by="atime", remove_empty_dirs=True)
    real = purge(root, age_by="atime", remove_empty_dirs=True)
    assert first.stats["files_to_purge"] == second.stats["files_to_purge"] == 2
    assert real.stats["files_purged"] == 2
    assert first.stats["empty_dirs_to_delete"] == real.stats["empty_dirs_deleted"] == 3


def test_directories_left_by_the_cap_go_in_the_next_run_by_ctime(tmp_path):
    for i in range(4):
        make_file(tmp_path / f"d{i}" / "sub" / "f", old=True)
    os.utime(tmp_path / "d0" / "sub" / "f", (OLD, OLD))
    first = purge(tmp_path, age_by="mtime", remove_empty_dirs=True, max_empty_dirs_to_delete=3)
    assert first.stats["empty_dirs_deleted"] == 3
    # ctime cannot be set back, and nothing needs it to be: the next run removes the rest.
    second = purge(tmp_path, age_by="ctime", remove_empty_dirs=True, max_empty_dirs_to_delete=0)
    assert snapshot(tmp_path) == set()
    assert second.stats["empty_dirs_deleted"] == 5


def test_a_2000_level_chain_under_ulimit_64(deep_tmp):
    root = deep_tmp / "root"
    root.mkdir()
    fd = os.open(root, os.O_RDONLY)
    for _ in range(2000):
        os.mkdir("d", dir_fd=fd)
        os.close(os.open("old", os.O_CREAT | os.O_WRONLY, dir_fd=fd))
        os.utime("old", (OLD, OLD), dir_fd=fd)
        nfd = os.open("d", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = nfd
    os.close(fd)
    result = run_cli(
        str(root), "--remove-empty-dirs", "--max-empty-dirs-to-delete", "0", "--log-format",
        "json", prefix=("prlimit", "--nofile=64:64"),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    stats = final(result.stdout)
    assert stats["files_purged"] == 2000 and stats["empty_dirs_deleted"] == 2000
    assert stats["errors"] == 0 and os.listdir(root) == []


@pytest.mark.parametrize(
    "options",
    [["--manifest", "{m}"], ["--manifest", "{m}", "--processes", "1"], ["--exclude-dir", "x/y"]],
)
def test_memory_stays_linear_in_the_depth_with_relative_paths(deep_tmp, options):
    # Each directory of a 1,500-level chain of 255-character names kept its whole relative
    # path (for the manifest, or a pattern with '/'): the chain held ~290 MB of paths, 700 MB
    # at 2,000 levels, and worker batches of 64 such paths more (found by review). Every
    # manifest line must still carry the file's exact path.
    root = deep_tmp / "root"
    root.mkdir()
    fd = os.open(root, os.O_RDONLY)
    names = []
    for level in range(1500):
        names.append(f"{level:05d}" + "d" * 250)
        os.mkdir(names[-1], dir_fd=fd)
        os.close(os.open("old", os.O_CREAT | os.O_WRONLY, dir_fd=fd))
        os.utime("old", (OLD, OLD), dir_fd=fd)
        nfd = os.open(names[-1], os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = nfd
    os.close(fd)
    manifest = deep_tmp / "m.jsonl"
    args = [a.format(m=manifest) for a in options]
    result = run_cli(str(root), "--dry-run", "--log-format", "json", *args)
    assert result.returncode == 0, result.stderr[-2000:]
    stats = final(result.stdout)
    assert stats["files_to_purge"] == 1500
    assert stats["peak_memory_mb"] < 120  # all processes; it was 300-560 MB
    if manifest.exists():
        paths = {json.loads(line)["path"] for line in manifest.read_text().splitlines()}
        assert paths == {"/".join([*names[:level], "old"]) for level in range(1500)}


def test_at_most_1000_warnings_with_three_processes(tmp_path, monkeypatch):
    from efspurge import fsops

    for d in range(3):
        old_files(tmp_path / f"d{d}", 500)

    def refuse(dir_fd, name, dry_run):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(fsops, "unlink_file", refuse)  # inherited by the forked workers
    run = purge(tmp_path, processes=3)
    assert run.stats["errors"] == 1500
    warnings = [r for r in run.log if r["level"] == "WARNING" and "failed" in r["message"]]
    assert len(warnings) == 1000
    assert sum(1 for r in records("\n".join(json.dumps(r) for r in run.log))) == len(run.log)


@pytest.mark.parametrize("processes", [1, 2])
def test_big_directories_nested_deeper_than_the_descriptor_budget(tmp_path, monkeypatch, processes):
    # Each level is a big directory (its listing stays open across batches) holding the next:
    # with a budget of 8 descriptors, open listings fill it, and the walk must finish them
    # rather than stall (or, worse, end early and call the run complete).
    import efspurge.plan as plan_mod

    monkeypatch.setattr(plan_mod, "raise_fd_limit", lambda: 0)
    path = tmp_path
    for level in range(10):
        path = path / f"level{level}"
        for i in range(40):
            make_file(path / f"f{i:03d}", old=i % 2 == 0)
    run = purge(tmp_path, task_batch_size=8, processes=processes)
    assert run.code == 0 and run.stats["stop_reason"] is None
    assert run.stats["files_purged"] == 200
    assert sum(1 for p in snapshot(tmp_path) if p.startswith("file:")) == 200


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("remove_empty", [False, True])
def test_a_chain_of_big_directories_holds_a_bounded_number_of_listings(
    deep_tmp, monkeypatch, mode, remove_empty
):
    # Each level holds more entries than one listing step reads (here 20 with batches of 20),
    # so its listing stays open while the walk goes down; each open listing holds the C
    # library's read buffer (up to 1 MB on NFS). At most tree.MAX_OPEN_LISTINGS may be open
    # at once (4 here, for a 40-level chain): the walk finishes one before it opens another.
    from efspurge import fsops, tree

    monkeypatch.setattr(tree, "MAX_OPEN_LISTINGS", 4)
    root = deep_tmp / "root"
    level = root
    for _ in range(40):
        level.mkdir(parents=True)
        for i in range(25):
            make_file(level / f"f{i:02d}", old=i % 5 != 0)  # every fifth file young
        level = level / "d"
    open_now, most = [0], [0]
    start, close = fsops.start_listing, fsops.close_listing

    def counted_start(fd):
        listing = start(fd)
        open_now[0] += 1
        most[0] = max(most[0], open_now[0])
        return listing

    def counted_close(listing):
        open_now[0] -= 1
        close(listing)

    monkeypatch.setattr(fsops, "start_listing", counted_start)
    monkeypatch.setattr(fsops, "close_listing", counted_close)
    options = {"task_batch_size": 20, **mode}
    run = purge(root, remove_empty_dirs=remove_empty, max_empty_dirs_to_delete=0, **options)
    assert run.code == 0 and run.stats["errors"] == 0
    assert run.stats["files_purged"] == 40 * 20
    left = snapshot(root)
    assert len([e for e in left if e.startswith("file:")]) == 40 * 5  # the young ones
    assert len([e for e in left if e.startswith("dir:")]) == 39  # none empty
    # Listings are made in this process only (forked workers delete, they do not list).
    assert 0 < most[0] <= 4, most[0]


def test_at_the_listing_cap_a_directory_with_many_subdirectories_is_not_queued_whole(
    deep_tmp, monkeypatch
):
    # At the cap the walk finishes an open listing before opening another; a directory with
    # thousands of subdirectories would then queue them all (found by review). Once the
    # queue holds the entry budget (8 batches: 800 here), new directories go past the cap.
    from efspurge import tree
    from efspurge.listing import Listing

    monkeypatch.setattr(tree, "MAX_OPEN_LISTINGS", 2)
    root = deep_tmp / "root"
    level = root
    for _ in range(3):  # 3 levels whose listings stay open (150 entries, batches of 100)
        level.mkdir(parents=True)
        for i in range(150):
            make_file(level / f"f{i:03d}", old=True)
        level = level / "d"
    level.mkdir()
    for i in range(5000):
        (level / f"s{i:04d}").mkdir()
    make_file(level / "s0000" / "young", old=False)
    most = [0]
    unit = Listing.listing_unit

    def watched(self):
        most[0] = max(most[0], len(self.state.stack))
        return unit(self)

    monkeypatch.setattr(Listing, "listing_unit", watched)
    run = purge(root, task_batch_size=100, remove_empty_dirs=True, max_empty_dirs_to_delete=0)
    assert run.code == 0 and run.stats["errors"] == 0
    assert run.stats["files_purged"] == 450
    assert snapshot(root) == {"dir:d", "dir:d/d", "dir:d/d/d", "dir:d/d/d/s0000"} | {
        "file:d/d/d/s0000/young"
    }
    assert most[0] <= 800 + 100 + 10, most[0]  # the entry budget, one batch, the chain


def test_a_second_signal_ends_a_run_blocked_on_its_output(tmp_path):
    # A reader of stdout that stopped reading (a stalled log driver) blocks the loop in a
    # write: the loop cannot take signals, and two SIGTERMs did nothing, only SIGKILL ended
    # the run (found by review). The second one now ends it within a few seconds.
    old_files(tmp_path / "d", 3000)
    read_end, write_end = os.pipe()  # never read: it fills after ~64 KB of records
    env = {k: v for k, v in os.environ.items() if not k.startswith("EFSPURGE_")}
    proc = subprocess.Popen(
        [EFSPURGE, str(tmp_path), "--dry-run", "--log-level", "DEBUG"],
        stdout=write_end,
        stderr=subprocess.PIPE,
        env=env,
    )
    os.close(write_end)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and "pipe_write" not in _wchan(proc.pid):
            time.sleep(0.1)
        assert "pipe_write" in _wchan(proc.pid)  # blocked in the write
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert proc.poll() is None  # one signal: a stop, which the blocked loop cannot make
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(read_end)
    assert proc.returncode == 143
    assert "second SIGTERM: exiting at once" in err.decode()


def _wchan(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/wchan").read_text()
    except OSError:
        return ""
