"""Several local processes as one run (--processes): same result, exact caps, no orphans."""

from __future__ import annotations

import os
import shutil
import signal

import psutil
import pytest
from conftest import act_mid_run, age_dirs, final, make_file, purge, run_cli, snapshot

from efspurge.processes import share
from efspurge.purger import choose_processes
from efspurge.settings import Settings


def build(root):
    for a in range(6):
        for i in range(40):
            make_file(root / f"d{a}" / f"sub{i % 4}" / f"f{i}", old=(a + i) % 3 != 0, size=3)
    for a in range(3):
        make_file(root / f"gone{a}" / "x" / "old", old=True)
    (root / "empty").mkdir()
    os.symlink("/etc", root / "link")
    age_dirs(root)


@pytest.mark.parametrize("processes", [2, 3])
def test_processes_delete_exactly_what_one_process_deletes(tmp_path, processes):
    one, many = tmp_path / "one", tmp_path / "many"
    build(one)
    shutil.copytree(one, many, symlinks=True)
    age_dirs(many)
    reference = purge(one, remove_empty_dirs=True, max_empty_dirs_to_delete=0)
    result = run_cli(
        str(many), "--remove-empty-dirs", "--max-empty-dirs-to-delete", "0",
        "--processes", str(processes),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert snapshot(many) == snapshot(one)
    stats = final(result.stdout)
    assert stats["processes"] == processes
    for key in ("files_scanned", "files_purged", "bytes_freed", "empty_dirs_deleted",
                "symlinks_skipped", "files_other_shards", "errors"):  # fmt: skip
        assert stats[key] == reference.stats[key], key
    # A directory that another process already emptied and removed is not listed again.
    removed = reference.stats["empty_dirs_deleted"]
    assert reference.stats["dirs_scanned"] - removed <= stats["dirs_scanned"]
    assert stats["dirs_scanned"] <= reference.stats["dirs_scanned"]


@pytest.mark.parametrize(("cap", "processes"), [(1, 2), (37, 2), (37, 3), (100, 3)])
def test_max_delete_is_exact_across_processes(tmp_path, cap, processes):
    for d in range(10):
        for i in range(30):
            make_file(tmp_path / f"d{d}" / f"f{i}", old=True)
    result = run_cli(str(tmp_path), "--max-delete", str(cap), "--processes", str(processes))
    stats = final(result.stdout)
    left = sum(1 for e in snapshot(tmp_path) if e.startswith("file:"))
    assert 300 - left == stats["files_purged"] <= cap
    assert result.returncode == 4 and stats["stop_reason"] == "max_delete"


def test_max_empty_dirs_is_exact_across_processes(tmp_path):
    for i in range(30):
        (tmp_path / f"e{i}").mkdir()
    age_dirs(tmp_path)
    result = run_cli(
        str(tmp_path), "--remove-empty-dirs", "--max-empty-dirs-to-delete", "7", "--processes", "3"
    )
    assert result.returncode == 0, result.stderr
    assert final(result.stdout)["empty_dirs_deleted"] == 30 - len(os.listdir(tmp_path)) <= 7


def test_processes_inside_user_shards(tmp_path):
    one, many = tmp_path / "one", tmp_path / "many"
    build(one)
    shutil.copytree(one, many, symlinks=True)
    age_dirs(many)
    reference = purge(one, remove_empty_dirs=True, max_empty_dirs_to_delete=0)
    totals = 0
    for index in range(2):
        result = run_cli(
            str(many), "--remove-empty-dirs", "--max-empty-dirs-to-delete", "0",
            "--shard-count", "2", "--shard-index", str(index), "--processes", "2",
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        totals += final(result.stdout)["files_purged"]
    assert snapshot(many) == snapshot(one)
    assert totals == reference.stats["files_purged"]


def test_a_child_that_dies_fails_the_run_and_leaves_no_orphan(tmp_path):
    for d in range(20):
        for i in range(1000):
            make_file(tmp_path / f"d{d}" / f"f{i}", old=i % 2 == 0)

    def kill_the_child(proc):
        (child,) = psutil.Process(proc.pid).children()
        child.send_signal(signal.SIGKILL)

    returncode, out = act_mid_run([str(tmp_path), "--processes", "2"], kill_the_child)
    assert returncode == 3
    stats = final(out)
    assert stats["stop_reason"] == "child process failed"
    assert '"A child process failed"' in out


def test_sigterm_reaches_every_process(tmp_path):
    for d in range(20):
        for i in range(1000):
            make_file(tmp_path / f"d{d}" / f"f{i}", old=i % 2 == 0)
    children = []

    def terminate(proc):
        children.extend(psutil.Process(proc.pid).children())
        proc.send_signal(signal.SIGTERM)

    returncode, out = act_mid_run([str(tmp_path), "--processes", "3"], terminate)
    assert returncode == 143
    assert len(children) == 2 and not any(c.is_running() for c in children)
    stats = final(out)
    assert stats["interrupted"] is True and stats["stop_reason"] == "SIGTERM"
    left = sum(1 for e in snapshot(tmp_path) if e.startswith("file:"))
    assert stats["files_purged"] == 20_000 - left
    assert 0 < stats["files_purged"] < 10_000


def test_shares_add_up_exactly():
    for total in (0, 1, 5, 37, 100):
        for count in (1, 2, 3, 7):
            parts = [share(total, i, count) for i in range(count)]
            assert sum(parts) == total
            assert max(parts) - min(parts) <= 1


def test_choice_of_process_count(monkeypatch):
    import efspurge.purger as purger_mod

    monkeypatch.setattr(purger_mod, "available_cpus", lambda: 8)
    assert choose_processes(Settings(path="/x"), "ext4") == 2
    assert choose_processes(Settings(path="/x"), "nfs4") == 1
    assert choose_processes(Settings(path="/x", processes=4), "nfs4") == 4
    assert choose_processes(Settings(path="/x", max_delete=1), "ext4") == 1
    assert choose_processes(Settings(path="/x", max_concurrency=1), "ext4") == 1
    monkeypatch.setattr(purger_mod, "available_cpus", lambda: 1)
    assert choose_processes(Settings(path="/x"), "ext4") == 1


def test_concurrency_ceiling_is_for_the_whole_run():
    from efspurge.processes import process_settings
    from efspurge.purger import choose_io_threads

    settings = Settings(path="/x", max_concurrency=301, io_threads=None)
    parts = [process_settings(settings, i, 3) for i in range(3)]
    assert sum(p.max_concurrency for p in parts) == 301
    assert sum(p.memory_limit_mb for p in parts) == settings.memory_limit_mb
    assert sum(choose_io_threads(p, "nfs4") for p in parts) <= 301
    explicit = [process_settings(Settings(path="/x", io_threads=10), i, 4) for i in range(4)]
    assert sum(p.io_threads for p in explicit) == 10
