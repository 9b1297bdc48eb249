"""Safety rails and selection, on real trees: mount points, caps, time budget, patterns,
timestamps, young directories."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from conftest import OLD, age_dirs, final, make_file, purge, records, run_cli, snapshot

from efspurge import fsops
from efspurge.selection import Selector

# --- one filesystem ---------------------------------------------------------------------------


@pytest.fixture
def tmpfs_mount(tmp_path):
    """A real second filesystem mounted below the root (the suite runs as root)."""
    if os.geteuid() != 0:
        pytest.skip("mounting needs root")
    root = tmp_path / "root"
    mnt = root / "other-fs"
    mnt.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "efspurge-test", str(mnt)], check=True)
    try:
        yield root, mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_another_filesystem_below_the_root_is_never_touched(tmpfs_mount):
    root, mnt = tmpfs_mount
    make_file(mnt / "old-on-other-fs", old=True)
    make_file(mnt / "sub" / "old2", old=True)
    (mnt / "empty").mkdir()
    make_file(root / "old-here", old=True)
    age_dirs(root)
    before_mnt = snapshot(mnt)
    run = purge(root, remove_empty_dirs=True, io_threads=4)
    assert snapshot(mnt) == before_mnt
    assert not (root / "old-here").exists()
    assert run.stats["mount_points_skipped"] == 1
    assert mnt.is_dir()
    # The record says why without guessing the kind of mount (it said "bind mount" for any).
    [record] = [r for r in run.log if r["message"].startswith("Mount point not entered")]
    assert (
        record["extra_fields"]["reason"]
        == "a mount point (listed in /proc/self/mountinfo at start)"
    )


def test_crossing_filesystems_when_asked(tmpfs_mount):
    root, mnt = tmpfs_mount
    make_file(mnt / "old-on-other-fs", old=True)
    run = purge(root, one_file_system=False)
    assert not (mnt / "old-on-other-fs").exists()
    assert run.stats["mount_points_skipped"] == 0


def test_bind_mount_of_the_same_filesystem_is_detected(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting needs root")
    root = tmp_path / "root"
    source = tmp_path / "source"
    make_file(source / "precious-old", old=True)
    (root / "bind").mkdir(parents=True)
    subprocess.run(["mount", "--bind", str(source), str(root / "bind")], check=True)
    try:
        assert os.stat(root / "bind").st_dev == os.stat(root).st_dev  # same device
        run = purge(root)
        assert (source / "precious-old").exists()
        assert run.stats["mount_points_skipped"] == 1
    finally:
        subprocess.run(["umount", "-l", str(root / "bind")], check=False)


# --- deletion cap -----------------------------------------------------------------------------


def _many_old(root: Path, dirs: int = 40, per_dir: int = 30) -> int:
    for d in range(dirs):
        for i in range(per_dir):
            make_file(root / f"d{d}" / f"f{i}", old=True)
    return dirs * per_dir


def _files(root: Path) -> int:
    return sum(1 for e in snapshot(root) if e.startswith("file:"))


@pytest.mark.parametrize("cap", [1, 37, 500])
def test_max_delete_is_never_exceeded_with_64_threads(tmp_path, cap):
    total = _many_old(tmp_path)
    run = purge(tmp_path, max_delete=cap, io_threads=64, task_batch_size=8)
    assert total - _files(tmp_path) == cap
    assert run.stats["files_purged"] == cap
    assert run.code == 4
    assert run.stats["stop_reason"] == "max_delete" and run.stats["interrupted"] is True


def test_max_delete_not_reached_is_a_normal_run(tmp_path):
    total = _many_old(tmp_path, dirs=2, per_dir=5)
    run = purge(tmp_path, max_delete=total)
    assert run.code == 0 and _files(tmp_path) == 0


def test_dry_run_reports_that_the_cap_would_be_hit(tmp_path):
    _many_old(tmp_path, dirs=5, per_dir=10)
    before = snapshot(tmp_path)
    run = purge(tmp_path, max_delete=12, dry_run=True, io_threads=8, task_batch_size=4)
    assert snapshot(tmp_path) == before
    assert run.stats["files_to_purge"] == 12
    assert run.code == 4 and run.stats["stop_reason"] == "max_delete"


def test_max_delete_exit_code_from_the_cli(tmp_path):
    _many_old(tmp_path, dirs=3, per_dir=10)
    result = run_cli(str(tmp_path), "--max-delete", "7")
    assert result.returncode == 4
    assert final(result.stdout)["files_purged"] == 7


def test_each_cap_reached_is_said_once_as_a_warning(tmp_path):
    # Only the final record's stop_reason said that --max-delete stopped a run, and nothing
    # said that --max-empty-dirs-to-delete left directories behind (exit 0), although the
    # reference tells users to raise it when there are many (found by a new-user review).
    _many_old(tmp_path / "a", dirs=6, per_dir=4)
    _many_old(tmp_path / "b", dirs=2, per_dir=4)
    age_dirs(tmp_path / "a")
    result = run_cli(
        str(tmp_path / "a"), "--max-delete", "30", "--remove-empty-dirs",
        "--max-empty-dirs-to-delete", "2", "--processes", "2",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = [r for r in records(result.stdout) if r["level"] == "WARNING"]
    assert [r["message"] for r in lines] == [
        "Empty-directory limit reached: the other empty directories stay until a later run"
    ]
    assert lines[0]["extra_fields"] == {"max_empty_dirs_to_delete": 2}
    assert final(result.stdout)["empty_dirs_deleted"] == 2
    capped = run_cli(str(tmp_path / "b"), "--max-delete", "3")
    assert capped.returncode == 4
    warned = [r for r in records(capped.stdout) if r["level"] == "WARNING"]
    assert [r["message"] for r in warned] == [
        "Deletion limit reached: stopping, the other old files stay until a later run"
    ]
    assert warned[0]["extra_fields"] == {"max_delete": 3}


# --- time budget ------------------------------------------------------------------------------


def test_max_runtime_stops_near_the_budget(tmp_path, monkeypatch):
    _many_old(tmp_path, dirs=4, per_dir=1000)
    real_unlink = fsops.unlink_file

    def slow_unlink(dir_fd, name, dry_run):
        time.sleep(0.001)  # a network filesystem: the whole run would take over 4 s
        return real_unlink(dir_fd, name, dry_run)

    monkeypatch.setattr(fsops, "unlink_file", slow_unlink)
    run = purge(tmp_path, max_runtime=0.5)
    assert run.code == 5
    assert run.stats["stop_reason"] == "max_runtime"
    assert 0.5 <= run.stats["duration_seconds"] < 2.5
    assert 0 < run.stats["files_purged"] < 4000
    assert 4000 - _files(tmp_path) == run.stats["files_purged"]
    assert any(r["message"].startswith("Maximum runtime reached") for r in run.log)


# --- patterns ---------------------------------------------------------------------------------


def test_selector_rules():
    s = Selector(include=["*.log", "cache/**"], exclude=["keep*", "[*]star"])
    assert s.file_selected("a.log", "deep/dir/a.log")  # no '/': matches the name anywhere
    assert not s.file_selected("a.txt", "a.txt")
    assert s.file_selected("x", "cache/a/b/x")  # '**' spans directories
    assert not s.file_selected("x", "other/cache/x")  # a '/' pattern is anchored at the root
    assert not s.file_selected("keep.log", "keep.log")  # exclude wins over include
    assert s.file_selected("*star.log", "*star.log") is True  # '[*]' is a literal '*'...
    assert not Selector(exclude=["[*]star.log"]).file_selected("*star.log", "*star.log")
    assert Selector(exclude=["[*]star.log"]).file_selected("xstar.log", "xstar.log")
    assert Selector(exclude_dir=["**/.snapshot"]).dir_excluded(".snapshot", "a/b/.snapshot")
    assert Selector(exclude=["/top.log"]).file_selected("top.log", "sub/top.log")
    assert not Selector(exclude=["/top.log"]).file_selected("top.log", "top.log")
    assert not Selector(include=["data/*.csv"]).file_selected("x.csv", "data/sub/x.csv")


def test_patterns_select_exactly_on_a_real_tree(tmp_path, mode):
    names = [
        "app.log",
        "app.log.1",
        "keep.log",
        "cache/a.tmp",
        "cache/deep/b.tmp",
        "other/cache/c.tmp",
        "weird/*star?.log",
        "weird/plain.log",
        ".snapshot/old.log",
        "x/.snapshot/old.log",
    ]
    for name in names:
        make_file(tmp_path / name, old=True)
    run = purge(
        tmp_path,
        include=("*.log", "cache/**"),
        exclude=("keep*", "*[*]*"),
        exclude_dir=(".snapshot",),
        **mode,
    )
    remaining = {e.split(":", 1)[1] for e in snapshot(tmp_path) if e.startswith("file:")}
    assert remaining == {
        "app.log.1",  # not included
        "keep.log",  # excluded
        "other/cache/c.tmp",  # 'cache/**' is anchored at the root
        "weird/*star?.log",  # '*[*]*' excludes names with a literal '*'
        ".snapshot/old.log",  # directory not listed
        "x/.snapshot/old.log",
    }
    assert run.stats["dirs_excluded"] == 2
    assert run.stats["files_excluded"] == 4


def test_a_set_never_matches_a_slash():
    # As in a shell's glob: '[!_]' is one character of a name. Before, it also matched '/',
    # so an --include reached into a subdirectory it did not name (found by review).
    s = Selector(include=["tmp[!_]*/*.log"])
    assert s.file_selected("c.log", "tmp1/c.log")
    assert not s.file_selected("build.log", "tmp/project/build.log")
    assert not Selector(include=["a[/]b"]).file_selected("b", "a/b")
    assert not Selector(include=["a[.-0]b"]).file_selected("b", "a/b")  # a range over '/'
    assert Selector(include=["a[.-0]b"]).file_selected("a.b", "a.b")


def test_an_exclusion_keeps_the_broader_reading_of_a_set():
    # Read strictly, an existing --exclude 'srv/app[!_]*.keep' would stop protecting
    # srv/app/x.keep after an upgrade (found by review): where the readings differ, an
    # exclusion keeps more.
    assert not Selector(exclude=["srv/app[!_]*.keep"]).file_selected("x.keep", "srv/app/x.keep")
    assert Selector(exclude_dir=["data/run[!0-9]*"]).dir_excluded("x", "data/run/x")
    assert Selector(exclude=["tmp[!_]*/*.log"]).file_selected("b.log", "tmp_x/b.log")


def test_an_include_with_a_negated_set_deletes_only_what_a_glob_names(tmp_path, mode):
    for name in ("tmp1/c.log", "tmp/project/build.log", "tmp_x/d.log"):
        make_file(tmp_path / name, old=True)
    purge(tmp_path, include=("tmp[!_]*/*.log",), **mode)
    remaining = {e.split(":", 1)[1] for e in snapshot(tmp_path) if e.startswith("file:")}
    assert remaining == {"tmp/project/build.log", "tmp_x/d.log"}
    make_file(tmp_path / "srv/app/x.keep", old=True)
    purge(tmp_path, exclude=("srv/app[!_]*.keep",), **mode)
    assert (tmp_path / "srv/app/x.keep").exists()  # the exclusion still keeps it


# --- which timestamp --------------------------------------------------------------------------


def test_age_by_each_timestamp_deletes_exactly_the_model_set(tmp_path):
    combos = [(m, a, c) for m in (0, 1) for a in (0, 1) for c in (0, 1)]  # 1 = old
    cutoff_days = 2 / 86_400  # two seconds

    def build(root: Path) -> None:
        for m, a, c in combos:
            p = make_file(root / f"m{m}a{a}c{c}", old=True)
            now = time.time()
            os.utime(p, (now - 86_400 if a else now + 3600, now - 86_400 if m else now + 3600))

    expected = {
        "mtime": {f"m{m}a{a}c{c}" for m, a, c in combos if m},
        "atime": {f"m{m}a{a}c{c}" for m, a, c in combos if a},
        "ctime": {f"m{m}a{a}c{c}" for m, a, c in combos if c},
        "newest": {f"m{m}a{a}c{c}" for m, a, c in combos if m and a and c},
    }
    roots = {age_by: tmp_path / age_by for age_by in expected}
    for root in roots.values():
        build(root)
    time.sleep(2.5)  # every ctime is now older than the 2-second cutoff...
    for root in roots.values():
        for m, a, c in combos:
            if not c:
                os.chmod(root / f"m{m}a{a}c{c}", 0o600)  # ...except these: fresh ctime
    for age_by, root in roots.items():
        purge(root, max_age_days=cutoff_days, age_by=age_by)
        deleted = {f"m{m}a{a}c{c}" for m, a, c in combos} - set(os.listdir(root))
        assert deleted == expected[age_by], age_by


# --- young directories ------------------------------------------------------------------------


def test_every_empty_directory_goes_by_default_whatever_its_age(tmp_path):
    # The reference's result: --remove-empty-dirs removes empty directories, young or old.
    (tmp_path / "fresh-empty").mkdir()
    make_file(tmp_path / "fresh-parent" / "old.tmp", old=True)
    run = purge(tmp_path, remove_empty_dirs=True)
    assert snapshot(tmp_path) == set()
    assert run.stats["empty_dirs_deleted"] == 2 and run.stats["young_dirs_kept"] == 0


def test_young_rail_keeps_only_directories_found_empty_and_recent(tmp_path):
    (tmp_path / "old-empty").mkdir()
    os.utime(tmp_path / "old-empty", (OLD, OLD))
    (tmp_path / "fresh-empty").mkdir()  # just created by an application: kept
    # Emptied by this run: removed, although the purge itself just made its mtime recent.
    make_file(tmp_path / "fresh-parent" / "fresh-child" / "old.tmp", old=True)
    run = purge(tmp_path, remove_empty_dirs=True, keep_empty_dirs_newer_than=3600)
    assert snapshot(tmp_path) == {"dir:fresh-empty"}
    assert run.stats["young_dirs_kept"] == 1
    assert run.stats["empty_dirs_deleted"] == 3
    # The same result for a dry run, and for the next run: nothing was re-stamped.
    dry = purge(tmp_path, remove_empty_dirs=True, keep_empty_dirs_newer_than=3600, dry_run=True)
    assert dry.stats["empty_dirs_to_delete"] == 0 and dry.stats["young_dirs_kept"] == 1
    os.utime(tmp_path / "fresh-empty", (OLD, OLD))
    again = purge(tmp_path, remove_empty_dirs=True, keep_empty_dirs_newer_than=3600)
    assert snapshot(tmp_path) == set() and again.stats["empty_dirs_deleted"] == 1


@pytest.mark.parametrize("age_by", ["mtime", "ctime", "newest"])
def test_debug_says_why_a_file_was_kept_by_the_timestamp_in_use(tmp_path, age_by):
    make_file(tmp_path / "fresh", old=False)
    run = purge(tmp_path, age_by=age_by, log_level="DEBUG", dry_run=True)
    reasons = [r["extra_fields"]["reason"] for r in run.log if r["message"] == "Kept"]
    assert len(reasons) == 1 and reasons[0].startswith(f"{age_by} ")
