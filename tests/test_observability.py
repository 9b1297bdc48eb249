"""Audit manifest and dry-run report, checked against the disk; the progress record.
(Metrics: test_metrics.py.)"""

from __future__ import annotations

import base64
import json
import os
import signal
import time
from pathlib import Path

import pytest
from conftest import (
    OLD,
    act_mid_run,
    age_dirs,
    final,
    make_file,
    purge,
    records,
    run_cli,
    snapshot,
)

# --- manifest ---------------------------------------------------------------------------------


def manifest_entries(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def manifest_paths(entries: list[dict], actions: set[str]) -> set[str]:
    out = set()
    for e in entries:
        if e["action"] in actions:
            raw = base64.b64decode(e["path_b64"]) if "path_b64" in e else e["path"].encode()
            out.add(os.fsdecode(raw))
    return out


def build(root: Path) -> None:
    make_file(root / "logs" / "old.log", old=True, size=100)
    make_file(root / "logs" / "new.log", old=False, size=7)
    make_file(root / "cache" / "a" / "b" / "old.bin", old=True, size=2000)
    make_file(root / "top-old.txt", old=True, size=5)
    make_file(root / "ünï" / "spa ce\nnew line", old=True, size=1)
    raw = os.fsencode(root / "cache") + b"/bad-\xff\xfe"
    with open(raw, "wb") as f:
        f.write(b"xyz")
    os.utime(raw, (OLD, OLD))
    age_dirs(root)


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "real-run"])
def test_manifest_lists_exactly_what_left_the_disk(tmp_path, dry_run):
    root = tmp_path / "root"
    build(root)
    before = snapshot(root)
    out = tmp_path / "manifest.jsonl"
    run = purge(root, dry_run=dry_run, remove_empty_dirs=True, manifest=str(out), io_threads=4)
    after = snapshot(root)
    entries = manifest_entries(out)
    file_actions = {"would_delete"} if dry_run else {"delete"}
    dir_actions = {"would_rmdir"} if dry_run else {"rmdir"}
    if dry_run:
        assert after == before
        real = purge(root, remove_empty_dirs=True)
        gone = before - snapshot(root)
    else:
        gone = before - after
        real = run
    assert manifest_paths(entries, file_actions) == {e[5:] for e in gone if e.startswith("file:")}
    assert manifest_paths(entries, dir_actions) == {e[4:] for e in gone if e.startswith("dir:")}
    assert run.stats["manifest_lines"] == len(entries)
    bad = next(e for e in entries if "path_b64" in e)
    assert bad["path"] == "cache/bad-\\xff\\xfe" and bad["size"] == 3
    sample = next(e for e in entries if e.get("path") == "logs/old.log")
    assert sample["size"] == 100 and sample["mtime"].startswith(
        time.strftime("%Y-%m-%d", time.gmtime(OLD))
    )
    assert real.stats["files_purged"] == len(manifest_paths(entries, file_actions))


def test_unwritable_manifest_is_a_usage_error_before_anything_is_deleted(tmp_path):
    make_file(tmp_path / "root" / "old", old=True)
    result = run_cli(
        str(tmp_path / "root"), "--manifest", str(tmp_path / "no" / "such" / "dir" / "m")
    )
    assert result.returncode == 2 and "--manifest" in result.stderr
    assert (tmp_path / "root" / "old").exists()


def test_manifest_is_complete_after_sigterm(tmp_path):
    root = tmp_path / "root"
    for d in range(40):
        for i in range(500):
            make_file(root / f"d{d}" / f"f{i}", old=i % 2 == 0)
    before = snapshot(root)
    out = tmp_path / "manifest.jsonl"
    returncode, printed = act_mid_run(
        [str(root), "--manifest", str(out)], lambda proc: proc.send_signal(signal.SIGTERM)
    )
    assert returncode == 143
    stats = final(printed)
    gone = {e[5:] for e in before - snapshot(root) if e.startswith("file:")}
    assert 0 < len(gone) < 10_000
    assert manifest_paths(manifest_entries(out), {"delete"}) == gone
    assert stats["files_purged"] == len(gone)


# --- report -----------------------------------------------------------------------------------


def test_report_by_top_level_directory_and_age(tmp_path):
    build(tmp_path)
    now = time.time()
    make_file(tmp_path / "logs" / "older.log", old=True, size=10)
    os.utime(tmp_path / "logs" / "older.log", (now - 400 * 86400,) * 2)
    run = purge(tmp_path, dry_run=True)
    tops = run.stats["by_top_level_dir"]
    assert tops["cache"] == {"files": 2, "bytes": 2003}
    assert tops["logs"] == {"files": 2, "bytes": 110}
    assert tops["."] == {"files": 1, "bytes": 5}
    assert next(iter(tops)) == "cache"  # largest first
    ages = run.stats["by_age"]
    assert ages[">365d"] == {"files": 1, "bytes": 10}
    assert ages["90-180d"]["files"] == 5  # the 100-day-old ones
    assert sum(a["files"] for a in ages.values()) == run.stats["files_to_purge"]


def test_manifest_mtime_is_the_mtime_whatever_ages_the_file(tmp_path):
    now = time.time()
    p = make_file(tmp_path / "root" / "f", old=True)
    os.utime(p, (now - 400 * 86400, now - 100 * 86400))  # atime 400 days, mtime 100 days ago
    out = tmp_path / "m.jsonl"
    run = purge(tmp_path / "root", age_by="atime", manifest=str(out), dry_run=True)
    (entry,) = manifest_entries(out)
    assert entry["mtime"].startswith(time.strftime("%Y-%m-%d", time.gmtime(now - 100 * 86400)))
    assert run.stats["by_age"] == {">365d": {"files": 1, "bytes": 0}}  # aged by atime


def test_age_report_counts_every_selected_file_even_when_unlink_fails(tmp_path, monkeypatch):
    from efspurge import fsops

    make_file(tmp_path / "a", old=True)
    make_file(tmp_path / "b", old=True)

    def refuse_a(dir_fd, name, dry_run):
        if name == "a":
            raise PermissionError(13, "Permission denied")
        os.unlink(name, dir_fd=dir_fd)

    monkeypatch.setattr(fsops, "unlink_file", refuse_a)
    run = purge(tmp_path)
    assert run.stats["files_to_purge"] == 2 and run.stats["files_purged"] == 1
    assert sum(cell["files"] for cell in run.stats["by_age"].values()) == 2


# --- progress ---------------------------------------------------------------------------------


def test_progress_reports_the_bound_on_batches_in_flight(tmp_path):
    # in_flight can reach one batch per thread, and per worker process one per thread of its
    # own and one more (pipelined), so the record gives that bound next to the threads, the
    # same figure as the start record's.
    root = tmp_path / "root"
    for i in range(200):
        make_file(root / f"d{i % 4}" / f"f{i:03d}", old=True)
    args = [str(root), "--io-threads", "3", "--processes", "3", "--max-ops-per-second", "400"]
    returncode, printed = act_mid_run(args, lambda proc: proc.send_signal(signal.SIGTERM))
    assert returncode == 143
    start = next(r for r in records(printed) if r["message"] == "Starting purge operation")
    progress = next(r for r in records(printed) if r["message"] == "Progress")["extra_fields"]
    assert progress["concurrency"] == 3
    assert progress["max_in_flight"] == 3 + 2 * (3 + 1) == start["extra_fields"]["max_in_flight"]
    assert 0 <= progress["in_flight"] <= progress["max_in_flight"]
