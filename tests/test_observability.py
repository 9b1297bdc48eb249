"""Audit manifest, dry-run report and Prometheus metrics, checked against the disk and a real
Pushgateway."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import (
    OLD,
    act_mid_run,
    age_dirs,
    final,
    make_file,
    purge,
    run_cli,
    snapshot,
)
from prometheus_client.parser import text_string_to_metric_families

from efspurge.settings import Settings

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


# --- metrics ----------------------------------------------------------------------------------


def samples(text: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(found: dict, name: str, **labels) -> float:
    matches = [v for (n, ls), v in found.items() if n == name and set(labels.items()) <= set(ls)]
    assert len(matches) == 1, (name, labels, found)
    return matches[0]


def test_metrics_textfile_parses_and_matches_the_final_record(tmp_path):
    root = tmp_path / "root"
    build(root)
    prom = tmp_path / "efspurge.prom"
    run = purge(root, metrics_file=str(prom))
    found = samples(prom.read_text())
    assert (
        value(found, "efspurge_files_deleted_total", dry_run="false", outcome="success")
        == run.stats["files_purged"]
    )
    assert value(found, "efspurge_bytes_freed_total") == run.stats["bytes_freed"]
    assert value(found, "efspurge_files_scanned_total") == run.stats["files_scanned"]
    assert value(found, "efspurge_errors_total") == 0
    assert value(found, "efspurge_last_run_exit_code") == 0
    assert (
        abs(value(found, "efspurge_last_success_timestamp_seconds", dry_run="false") - time.time())
        < 60
    )
    assert not list(tmp_path.glob("efspurge.prom.*"))  # the temporary file was renamed away


def test_a_failed_run_keeps_the_last_success_in_the_textfile(tmp_path, monkeypatch):
    root = tmp_path / "root"
    build(root)
    prom = tmp_path / "efspurge.prom"
    purge(root, metrics_file=str(prom))
    first = value(samples(prom.read_text()), "efspurge_last_success_timestamp_seconds")
    from efspurge import fsops

    monkeypatch.setattr(fsops, "lstat_at", lambda dir_fd, name: 1 / 0)  # an internal error: exit 3
    make_file(root / "another-old", old=True)
    run = purge(root, metrics_file=str(prom))
    assert run.code == 3
    found = samples(prom.read_text())
    assert value(found, "efspurge_last_run_exit_code", outcome="failed") == 3
    assert value(found, "efspurge_last_success_timestamp_seconds") == first


@pytest.fixture
def pushgateway():
    binary = shutil.which("prometheus-pushgateway") or shutil.which("pushgateway")
    if binary is None:
        pytest.fail("prometheus-pushgateway is missing: scripts/test.sh installs it")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [binary, f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as resp:
                if resp.status == 200:
                    break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("the Pushgateway did not start")
            time.sleep(0.05)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def scrape(url: str) -> dict:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as resp:
        return samples(resp.read().decode())


def test_push_to_a_real_pushgateway(tmp_path, pushgateway):
    root = tmp_path / "root"
    build(root)
    run = purge(
        root,
        pushgateway=pushgateway,
        push_job="purge-tmp",
        push_label=("instance=efs-a",),
    )
    assert run.code == 0 and any(r["message"] == "Metrics published" for r in run.log)
    found = scrape(pushgateway)
    deleted = value(found, "efspurge_files_deleted_total", job="purge-tmp", instance="efs-a")
    assert deleted == run.stats["files_purged"]
    first = value(
        found, "efspurge_last_success_timestamp_seconds", job="purge-tmp", instance="efs-a"
    )
    assert abs(first - time.time()) < 60


def test_failed_run_does_not_overwrite_the_pushed_last_success(tmp_path, pushgateway, monkeypatch):
    root = tmp_path / "root"
    build(root)
    purge(root, pushgateway=pushgateway, push_label=("instance=a",))
    first = value(scrape(pushgateway), "efspurge_last_success_timestamp_seconds", instance="a")
    from efspurge import fsops

    monkeypatch.setattr(fsops, "lstat_at", lambda dir_fd, name: 1 / 0)
    make_file(root / "x-old", old=True)
    time.sleep(0.01)
    run = purge(root, pushgateway=pushgateway, push_label=("instance=a",))
    assert run.code == 3
    found = scrape(pushgateway)
    assert value(found, "efspurge_last_success_timestamp_seconds", instance="a") == first
    assert value(found, "efspurge_last_run_exit_code", instance="a") == 3


def test_shards_push_into_their_own_groups(tmp_path, pushgateway):
    root = tmp_path / "root"
    build(root)
    for index in range(2):
        purge(root, pushgateway=pushgateway, shard_count=2, shard_index=index, dry_run=True)
    found = scrape(pushgateway)
    per_shard = [
        value(found, "efspurge_files_selected_total", job="efspurge", shard=str(i))
        for i in range(2)
    ]
    whole = purge(root, dry_run=True)
    assert sum(per_shard) == whole.stats["files_to_purge"] == 5
    assert all(n > 0 for n in per_shard)


def test_push_failure_is_logged_and_fails_the_run_only_when_asked(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"  # nothing listens here
    make_file(tmp_path / "old", old=True)
    lenient = purge(tmp_path, pushgateway=dead)
    assert lenient.code == 0 and any(r["message"] == "Metrics not published" for r in lenient.log)
    assert any(r["message"] == "Could not push metrics to the Pushgateway" for r in lenient.log)
    strict = purge(tmp_path, pushgateway=dead, fail_on_push_error=True)
    assert strict.code == 6


def test_grouping_key():
    from efspurge.metrics import grouping_key

    assert grouping_key(
        Settings(path="/x", push_label=("instance=a",), shard_count=3, shard_index=1)
    ) == {
        "instance": "a",
        "shard": "1",
    }


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
