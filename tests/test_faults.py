"""Faults injected at the one module that makes system calls (efspurge.fsops)."""

from __future__ import annotations

import errno
import os

import pytest
from conftest import age_dirs, make_file, purge, snapshot

from efspurge import fsops


def _fail_for(name_to_fail: str, err: int, real):
    def wrapper(*args, **kwargs):
        names = [a for a in args if isinstance(a, str)]
        entry = args[0] if args and hasattr(args[0], "name") else None
        if name_to_fail in names or (entry is not None and entry.name == name_to_fail):
            raise OSError(err, os.strerror(err))
        return real(*args, **kwargs)

    return wrapper


@pytest.mark.parametrize("err", [errno.EACCES, errno.EPERM, errno.EIO, errno.ESTALE])
def test_unlink_failure_is_counted_logged_and_the_run_goes_on(tmp_path, monkeypatch, mode, err):
    make_file(tmp_path / "d/bad", old=True)
    make_file(tmp_path / "d/good", old=True)
    make_file(tmp_path / "other/good2", old=True)
    monkeypatch.setattr(fsops, "unlink_file", _fail_for("bad", err, fsops.unlink_file))
    age_dirs(tmp_path)
    run = purge(tmp_path, remove_empty_dirs=True, **mode)
    assert snapshot(tmp_path) == {"dir:d", "file:d/bad"}
    assert run.stats["errors"] == 1
    assert run.stats["files_purged"] == 2
    assert run.code == 1
    warnings = [r for r in run.log if r["level"] == "WARNING"]
    assert warnings[0]["extra_fields"]["path"] == str(tmp_path / "d/bad")
    assert warnings[0]["extra_fields"]["errno"] == err
    # The final record stays at INFO, as in the reference, whatever the outcome.
    (done,) = [r for r in run.log if r["message"] == "Purge operation completed"]
    assert done["level"] == "INFO" and done["extra_fields"]["exit_code"] == 1


@pytest.mark.parametrize("err", [errno.EACCES, errno.EIO, errno.ESTALE])
def test_lstat_failure_keeps_the_file(tmp_path, monkeypatch, mode, err):
    make_file(tmp_path / "bad", old=True)
    make_file(tmp_path / "good", old=True)
    monkeypatch.setattr(fsops, "lstat_at", _fail_for("bad", err, fsops.lstat_at))
    run = purge(tmp_path, **mode)
    assert snapshot(tmp_path) == {"file:bad"}
    assert run.stats["errors"] == 1


def test_entries_vanishing_between_listing_and_delete_are_not_errors(tmp_path, monkeypatch, mode):
    for i in range(10):
        make_file(tmp_path / f"d/f{i}", old=True)
    real_unlink = fsops.unlink_file

    def racing_unlink(dir_fd, name, dry_run):
        if name in ("f3", "f7"):  # someone else deletes it first
            os.unlink(name, dir_fd=dir_fd)
        return real_unlink(dir_fd, name, dry_run)

    real_lstat = fsops.lstat_at

    def racing_lstat(name, *, dir_fd):
        if name == "f5":
            os.unlink(os.path.join(tmp_path, "d", "f5"))
        return real_lstat(name, dir_fd=dir_fd)

    monkeypatch.setattr(fsops, "unlink_file", racing_unlink)
    monkeypatch.setattr(fsops, "lstat_at", racing_lstat)
    age_dirs(tmp_path)
    run = purge(tmp_path, remove_empty_dirs=True, **mode)
    assert run.stats["errors"] == 0
    assert run.stats["entries_vanished"] == 3
    assert run.stats["files_purged"] == 7
    assert snapshot(tmp_path) == set()  # d was empty in the end, and removed
    assert run.code == 0


@pytest.mark.parametrize("err", [errno.EACCES, errno.EIO])
def test_unreadable_subdirectory_is_an_error_and_its_parent_stays(tmp_path, monkeypatch, err):
    make_file(tmp_path / "p/locked/old", old=True)
    make_file(tmp_path / "p/fine/old", old=True)
    monkeypatch.setattr(fsops, "open_subdir", _fail_for("locked", err, fsops.open_subdir))
    age_dirs(tmp_path)
    run = purge(tmp_path, remove_empty_dirs=True)
    assert snapshot(tmp_path) == {"dir:p", "dir:p/locked", "file:p/locked/old"}
    assert run.stats["errors"] == 1
    assert run.code == 1


def test_listing_failure_midway(tmp_path, monkeypatch):
    for i in range(30):
        make_file(tmp_path / f"d/f{i:02d}", old=True)
    real_read = fsops.read_entries
    calls = {"n": 0}

    def flaky_read(entries, limit):
        calls["n"] += 1
        if calls["n"] == 3:  # the second batch of d (the first call lists the root)
            raise OSError(errno.EIO, "I/O error")
        return real_read(entries, limit)

    monkeypatch.setattr(fsops, "read_entries", flaky_read)
    age_dirs(tmp_path)
    run = purge(tmp_path, remove_empty_dirs=True, task_batch_size=10)
    assert run.stats["errors"] == 1
    assert run.stats["files_purged"] == 10
    assert (tmp_path / "d").is_dir()  # not known to be empty: kept
    assert len(os.listdir(tmp_path / "d")) == 20


@pytest.mark.parametrize("err", [errno.ENOTEMPTY, errno.EBUSY, errno.EEXIST])
def test_rmdir_not_empty_is_not_an_error(tmp_path, monkeypatch, err):
    (tmp_path / "e").mkdir()
    monkeypatch.setattr(fsops, "remove_dir", _fail_for("e", err, fsops.remove_dir))
    age_dirs(tmp_path)
    run = purge(tmp_path, remove_empty_dirs=True)
    assert run.stats["errors"] == 0 and run.stats["empty_dirs_deleted"] == 0
    assert snapshot(tmp_path) == {"dir:e"}


def test_rmdir_permission_error_is_counted(tmp_path, monkeypatch):
    (tmp_path / "a/e").mkdir(parents=True)
    monkeypatch.setattr(fsops, "remove_dir", _fail_for("e", errno.EACCES, fsops.remove_dir))
    age_dirs(tmp_path)
    run = purge(tmp_path, remove_empty_dirs=True)
    assert run.stats["errors"] == 1
    assert snapshot(tmp_path) == {"dir:a", "dir:a/e"}  # a is not empty: kept too


def test_error_log_is_capped_but_errors_all_counted(tmp_path, monkeypatch):
    for i in range(30):
        make_file(tmp_path / f"f{i}", old=True)

    def always_fail(dir_fd, name, dry_run):
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(fsops, "unlink_file", always_fail)
    from efspurge import events

    monkeypatch.setattr(events, "ERROR_LOG_LIMIT", 5)
    run = purge(tmp_path)
    assert run.stats["errors"] == 30
    per_entry = [r for r in run.log if r["message"] == "unlink failed, skipping"]
    assert len(per_entry) == 5
    assert any("Error log limit reached" in r["message"] for r in run.log)


def test_directory_swapped_for_symlink_between_listing_and_open(tmp_path, monkeypatch, mode):
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    make_file(outside / "precious", old=True)
    make_file(root / "sub/old", old=True)
    real_open = fsops.open_subdir

    def swapping_open(parent_fd, name, *args, **kwargs):
        if name == "sub":
            os.rename(root / "sub", tmp_path / "moved")
            os.symlink(outside, root / "sub")
        return real_open(parent_fd, name, *args, **kwargs)

    monkeypatch.setattr(fsops, "open_subdir", swapping_open)
    run = purge(root, **mode)
    assert snapshot(outside) == {"file:precious"}
    assert snapshot(tmp_path / "moved") == {"file:old"}
    assert run.stats["dirs_skipped_changed"] == 1


def test_internal_error_in_a_worker_stops_the_run_with_exit_3(tmp_path, monkeypatch):
    make_file(tmp_path / "old", old=True)

    def broken(name, *, dir_fd):
        raise RuntimeError("bug")

    monkeypatch.setattr(fsops, "lstat_at", broken)
    run = purge(tmp_path)
    assert run.code == 3
    assert run.stats["interrupted"] is True
    assert (tmp_path / "old").exists()


def test_directory_removed_by_someone_else_does_not_keep_its_parent(tmp_path, monkeypatch):
    (tmp_path / "a/e").mkdir(parents=True)
    age_dirs(tmp_path)
    real_remove = fsops.remove_dir

    def someone_was_faster(parent_fd, name, dry_run):
        if name == "e":
            os.rmdir(name, dir_fd=parent_fd)  # another worker or a user got there first
        return real_remove(parent_fd, name, dry_run)

    monkeypatch.setattr(fsops, "remove_dir", someone_was_faster)
    run = purge(tmp_path, remove_empty_dirs=True)
    assert snapshot(tmp_path) == set()  # 'a' was empty in the end, and removed
    assert run.stats["errors"] == 0
    assert run.stats["empty_dirs_deleted"] == 1  # only 'a' is ours


@pytest.mark.parametrize("dry_run", [False, True])
def test_directory_gone_before_it_is_opened_is_counted_once_and_never_offered(
    tmp_path, monkeypatch, dry_run
):
    (tmp_path / "a" / "gone").mkdir(parents=True)
    real_open = fsops.open_subdir

    def someone_removed_it(parent_fd, name, *args, **kwargs):
        if name == "gone":
            os.rmdir(name, dir_fd=parent_fd)
        return real_open(parent_fd, name, *args, **kwargs)

    monkeypatch.setattr(fsops, "open_subdir", someone_removed_it)
    run = purge(tmp_path, remove_empty_dirs=True, dry_run=dry_run, processes=1)
    assert run.stats["entries_vanished"] == 1 and run.stats["errors"] == 0
    # Only 'a' is ours to remove (or, in a dry run, to report): the same count in both.
    assert run.stats["empty_dirs_to_delete"] == 1
    assert snapshot(tmp_path) == ({"dir:a"} if dry_run else set())


def test_directory_swapped_for_a_symlink_before_its_rmdir_is_a_change_not_an_error(
    tmp_path, monkeypatch
):
    root = tmp_path / "root"
    (root / "p" / "x").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    real_remove = fsops.remove_dir

    def swap_first(parent_fd, name, dry_run):
        if name == "x":
            os.rmdir(name, dir_fd=parent_fd)
            os.symlink(str(outside), name, dir_fd=parent_fd)
        return real_remove(parent_fd, name, dry_run)

    monkeypatch.setattr(fsops, "remove_dir", swap_first)
    run = purge(root, remove_empty_dirs=True, processes=1)
    assert run.stats["errors"] == 0 and run.code == 0
    assert run.stats["dirs_skipped_changed"] == 1
    assert snapshot(root) == {"dir:p", "link:p/x"}  # the symlink stays, and so does p
    assert outside.is_dir()
