"""--max-ops-per-second in real runs: what is counted, that a run waits for the limit, that a
dry run is limited alike, that a time budget still ends the run cleanly, and bad values.

The rate itself is measured through slowfs's own counters in benchmarks/ratelimit.py: timing
is not asserted here."""

from __future__ import annotations

import pytest
from conftest import final, make_file, purge, run_cli, snapshot


def build(root, dirs=3, per_dir=40):
    for d in range(dirs):
        for i in range(per_dir):
            make_file(root / f"d{d}" / f"f{i}", old=i % 2 == 0)


def expected_ops(dirs: int, per_dir: int, dry_run: bool) -> int:
    listing = 1 + dirs * (2 + 1)  # the root's read; each directory's lstat, open and read
    lstats = dirs * per_dir
    unlinks = 0 if dry_run else dirs * per_dir // 2
    return listing + lstats + unlinks


@pytest.mark.parametrize("dry_run", [False, True])
@pytest.mark.parametrize("processes", [1, 2])
def test_every_operation_is_counted_and_the_run_waits_for_the_limit(tmp_path, dry_run, processes):
    build(tmp_path)
    before = snapshot(tmp_path)
    run = purge(tmp_path, max_ops_per_second=100, dry_run=dry_run, processes=processes)
    stats = run.stats
    assert stats["files_to_purge"] == 60 and stats["errors"] == 0
    assert stats["ops_counted"] == expected_ops(3, 40, dry_run)
    assert stats["ops_per_second_limit"] == 100
    # 181 or 241 operations at 100/s with a burst of 10: the bucket must have made it wait.
    assert stats["rate_limit_wait_seconds"] > 0
    if dry_run:
        assert snapshot(tmp_path) == before
    else:
        assert len(snapshot(tmp_path)) == len(before) - 60


def test_shards_divide_the_limit_and_the_start_record_says_so(tmp_path):
    build(tmp_path, dirs=1, per_dir=4)
    run = purge(tmp_path, max_ops_per_second=900, shard_index=0, shard_count=3)
    start = next(r for r in run.log if r["message"] == "Starting purge operation")
    assert start["extra_fields"]["max_ops_per_second_effective"] == 300
    assert run.stats["ops_per_second_limit"] == 300


def test_a_time_budget_ends_a_throttled_run_cleanly(tmp_path):
    build(tmp_path, dirs=2, per_dir=500)
    result = run_cli(
        str(tmp_path), "--max-ops-per-second", "50", "--max-runtime", "1s", "--log-format", "json"
    )
    assert result.returncode == 5, result.stderr
    stats = final(result.stdout)
    assert stats["interrupted"] is True and stats["stop_reason"] == "max_runtime"
    assert 0 < stats["files_purged"] < 500
    remaining = {p for p in snapshot(tmp_path) if p.startswith("file:")}
    assert len(remaining) == 1000 - stats["files_purged"]


@pytest.mark.parametrize("value", ["-1", "nan", "inf", "fast", ""])
def test_bad_values_are_refused_and_nothing_changes(tmp_path, value):
    make_file(tmp_path / "old", old=True)
    result = run_cli(str(tmp_path), "--max-ops-per-second", value)
    assert result.returncode == 2
    assert "--max-ops-per-second" in result.stderr and len(result.stderr.splitlines()) == 1
    assert (tmp_path / "old").exists()
    env = run_cli(str(tmp_path), env={"EFSPURGE_MAX_OPS_PER_SECOND": value or " "})
    assert env.returncode == 2 and "EFSPURGE_MAX_OPS_PER_SECOND" in env.stderr
    assert (tmp_path / "old").exists()
